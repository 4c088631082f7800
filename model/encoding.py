"""Deep TEN texture encoding layer (Zhang, Xue, Dana, "Deep TEN: Texture Encoding Network", CVPR 2017).

For descriptors x_i and codewords d_j with smoothing factors s_j:
    r_ij = x_i - d_j,  a_ij = softmax_j(-s_j ||r_ij||^2),  e_j = sum_i a_ij r_ij.
Written with ||x - d||^2 = ||x||^2 - 2 x.d + ||d||^2 and E = A^T X - (sum_i a_ij) d_j, so memory is
O(B N K + B K D), never the (B, N, K, D) residual tensor.

The assignment must depend on the descriptors, or the layer collapses to pooling: descriptors are
L2-normalised (so their scale is the codewords' scale, as in NetVLAD), codewords start from k-means
of real descriptors (``init_from_descriptors``) and s_j = exp(log s_j) stays positive.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INITIAL_SMOOTHING = 10.0  # s_j before k-means sets it: unit descriptors are 0..4 apart (squared)


class TextureEncoding(nn.Module):
    def __init__(self, channels: int, codewords: int) -> None:
        super().__init__()
        if channels < 1 or codewords < 1:
            raise ValueError("channels and codewords must be positive")
        self.codewords = nn.Parameter(F.normalize(torch.randn(codewords, channels), dim=-1))
        self.log_smoothing = nn.Parameter(torch.full((codewords,), math.log(INITIAL_SMOOTHING)))

    @property
    def smoothing(self) -> torch.Tensor:
        return self.log_smoothing.exp()  # s_j > 0

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) raw descriptors -> (B, N, K) soft assignments a_ij of the normalised descriptors."""
        x = F.normalize(x, dim=-1)
        d = self.codewords  # (K, D)
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ d.t() + (d * d).sum(-1)  # (B, N, K)
        return torch.softmax(-self.smoothing * dist, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) descriptors -> (B, K, D) aggregated residuals E (not normalised)."""
        assign = self.assignments(x)  # (B, N, K)
        x = F.normalize(x, dim=-1)
        return assign.transpose(1, 2) @ x - assign.sum(1).unsqueeze(-1) * self.codewords  # (B, K, D)

    @torch.no_grad()
    def init_from_descriptors(self, descriptors: torch.Tensor, seed: int = 0) -> None:
        """Codewords = k-means centres of real (M, D) descriptors (normalised); s_j = 1 / the mean
        squared distance of each cluster's members to their centre, so a_ij starts soft but local."""
        from sklearn.cluster import KMeans

        x = F.normalize(descriptors.float(), dim=-1).cpu().numpy()
        k = self.codewords.shape[0]
        if len(x) < k:
            raise ValueError(f"k-means of {k} codewords needs at least {k} descriptors, got {len(x)}")
        km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(x)
        centres = torch.from_numpy(km.cluster_centers_).to(self.codewords)
        spread = np.array(
            [
                ((x[km.labels_ == j] - km.cluster_centers_[j]) ** 2).sum(1).mean() if (km.labels_ == j).any() else 1.0
                for j in range(k)
            ]
        )
        self.codewords.copy_(centres)
        self.log_smoothing.copy_(torch.from_numpy(-np.log(np.clip(spread, 1e-3, None))).to(self.log_smoothing))


def map_descriptors(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map -> (B, h*w, D) descriptors."""
    return feature_map.flatten(2).transpose(1, 2)


def encode_map(encoding: TextureEncoding, feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map -> (B, K*D) L2-normalised texture embedding."""
    return F.normalize(encoding(map_descriptors(feature_map)).flatten(1), dim=-1)


@torch.no_grad()
def codeword_usage(encoding: TextureEncoding, feature_maps: torch.Tensor) -> np.ndarray:
    """Share of all cells of (B, D, h, w) maps whose strongest assignment is each codeword (K,)."""
    nearest = encoding.assignments(map_descriptors(feature_maps)).argmax(-1).flatten()
    return np.bincount(nearest.cpu().numpy(), minlength=encoding.codewords.shape[0]) / max(1, nearest.numel())
