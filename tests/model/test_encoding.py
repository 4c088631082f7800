import torch

from model.encoding import TextureEncoding, encode_map


def naive_encoding(x: torch.Tensor, codewords: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """The Deep TEN formula as written: r_ij = x_i - d_j, a_ij = softmax_j(-s_j ||r_ij||^2), e_j = sum_i a_ij r_ij."""
    residuals = x[:, :, None, :] - codewords[None, None]  # (B, N, K, D)
    assign = torch.softmax(-smoothing * (residuals**2).sum(-1), dim=-1)  # (B, N, K)
    return (assign[..., None] * residuals).sum(1)  # (B, K, D)


def test_encoding_equals_naive_formula() -> None:
    layer = TextureEncoding(channels=5, codewords=3).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), naive_encoding(x, layer.codewords, layer.smoothing))


def test_encode_map_is_unit_length_and_flat() -> None:
    layer = TextureEncoding(channels=4, codewords=6)
    out = encode_map(layer, torch.randn(3, 4, 5, 2))
    assert out.shape == (3, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_encoding_gradients_reach_codewords_and_smoothing() -> None:
    layer = TextureEncoding(channels=4, codewords=3)
    layer(torch.randn(2, 6, 4)).square().sum().backward()
    assert layer.codewords.grad is not None and layer.codewords.grad.abs().sum() > 0
    assert layer.smoothing.grad is not None and layer.smoothing.grad.abs().sum() > 0
