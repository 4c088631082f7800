"""Deep TEN texture encoding layer (Zhang, Xue, Dana, "Deep TEN: Texture Encoding Network", CVPR 2017).

For descriptors x_i and codewords d_j with smoothing factors s_j:
    r_ij = x_i - d_j,  a_ij = softmax_j(-s_j ||r_ij||^2),  e_j = sum_i a_ij r_ij.
Written with ||x - d||^2 = ||x||^2 - 2 x.d + ||d||^2 and E = A^T X - (sum_i a_ij) d_j, so memory is
O(B N K + B K D), never the (B, N, K, D) residual tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextureEncoding(nn.Module):
    def __init__(self, channels: int, codewords: int) -> None:
        super().__init__()
        if channels < 1 or codewords < 1:
            raise ValueError("channels and codewords must be positive")
        bound = 1.0 / (codewords * channels) ** 0.5
        self.codewords = nn.Parameter(torch.empty(codewords, channels).uniform_(-bound, bound))
        self.smoothing = nn.Parameter(torch.empty(codewords).uniform_(0.0, 1.0))  # s_j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) descriptors -> (B, K, D) aggregated residuals E (not normalised)."""
        d = self.codewords  # (K, D)
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ d.t() + (d * d).sum(-1)  # (B, N, K)
        assign = torch.softmax(-self.smoothing * dist, dim=-1)  # (B, N, K)
        return assign.transpose(1, 2) @ x - assign.sum(1).unsqueeze(-1) * d  # (B, K, D)


def encode_map(encoding: TextureEncoding, feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map -> (B, K*D) L2-normalised texture embedding."""
    descriptors = feature_map.flatten(2).transpose(1, 2)  # (B, N, D)
    return F.normalize(encoding(descriptors).flatten(1), dim=-1)
