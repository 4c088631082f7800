import torch

from model.encoding import TextureEncoding, codeword_usage, encode_map


def naive_encoding(x: torch.Tensor, codewords: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """The Deep TEN formula as written: r_ij = x_i - d_j, a_ij = softmax_j(-s_j ||r_ij||^2), e_j = sum_i a_ij r_ij,
    on L2-normalised descriptors."""
    x = torch.nn.functional.normalize(x, dim=-1)
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


def test_encoding_gradients_equal_the_naive_formulas() -> None:
    """The expanded formula must differentiate like the one it rewrites: a term computed on
    detached codewords or smoothing gives the same values (the test above) but other gradients."""
    layer = TextureEncoding(channels=4, codewords=3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    weights = torch.randn(2, 3, 4, dtype=torch.float64)  # a loss that weighs every output differently
    params = [layer.codewords, layer.log_smoothing]
    fast = torch.autograd.grad((layer(x) * weights).sum(), params)
    naive = torch.autograd.grad((naive_encoding(x, layer.codewords, layer.smoothing) * weights).sum(), params)
    for ours, reference in zip(fast, naive, strict=True):
        torch.testing.assert_close(ours, reference)
        assert bool(reference.ne(0).all())  # every codeword and smoothing factor has a slope to compare


def test_assignment_depends_on_the_descriptors_not_their_scale() -> None:
    layer = TextureEncoding(channels=4, codewords=3)
    x = torch.randn(1, 10, 4)
    torch.testing.assert_close(layer.assignments(x), layer.assignments(66.0 * x))  # ReLU maps have |x|^2 ~ 66
    assert layer.smoothing.min() > 0


def test_codewords_on_real_ccp_maps_share_the_cells(ccp_root) -> None:  # type: ignore[no-untyped-def]
    """On real trunk maps of CCP photos, k-means-started codewords each take a share of the cells:
    at least half of them take >= 1% (a collapsed encoding gives a few codewords every cell)."""
    from model.data import load_image
    from model.network import PartAttentionNetwork
    from model.train import init_codewords
    from tests.helpers import tiny_config

    photos = sorted((ccp_root / "photos").glob("*.jpg"))[:16]
    model = PartAttentionNetwork(
        tiny_config(pretrained=True, channels=32, codewords=32, image_height=384, image_width=256)
    )
    with torch.inference_mode():
        maps = model.trunk_forward(torch.stack([load_image(p, (384, 256)) for p in photos]))
    init_codewords(model, [m.clone() for m in maps], seed=0)
    model.eval()
    with torch.inference_mode():
        usage = codeword_usage(model.attention.encoding, model.features(maps))
    assert (usage >= 0.01).sum() >= 16, usage
    assert usage.max() < 0.5
