"""A restoration filter fitted by the encoder and sent in the file (in the spirit of VVC's adaptive loop filter).

The encoder has both the original image and what the decoder will reconstruct, so it can fit,
per colour channel, the 5×5 linear filter (point-symmetric: 13 taps, plus an offset) that
brings the reconstruction closest to the original in the least-squares sense, and send the
coefficients (42 int16 values, 84 bytes) when the rate-distortion trade pays for them. The
decoder applies it to the synthesis output before clamping. A learned decoder trained briefly
leaves small, image-specific blur and colour shifts that such a filter undoes.

>>> import torch
>>> target = torch.rand(3, 24, 32)
>>> decoded = 0.9 * target + 0.03  # a uniform contrast loss the filter can undo
>>> coefs = quantize(fit(decoded, target))
>>> bool(((apply(decoded, coefs) - target) ** 2).mean() < 1e-6), len(to_bytes(coefs))
(True, 84)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BitstreamError

__all__ = ["fit", "quantize", "apply", "to_bytes", "from_bytes", "SECTION_BYTES", "SCALE"]

RADIUS = 2  # 5x5 support
# One offset of every point-symmetric pair (and the centre): (di, dj) with (di, dj) > (0, 0) lexicographically.
_OFFSETS = [(0, 0)] + [(di, dj) for di in range(-RADIUS, RADIUS + 1) for dj in range(-RADIUS, RADIUS + 1)
                       if (di, dj) > (0, 0)]
PARAMS = len(_OFFSETS) + 1  # 13 taps + an offset per channel
SCALE = 4096.0  # coefficients as int16 at 1/4096 (taps in [-8, 8))
SECTION_BYTES = 3 * PARAMS * 2
_LIMIT = 32767 / SCALE


def _features(decoded: Tensor) -> list[Tensor]:
    """``(C, H, W)`` -> ``PARAMS`` tensors ``(C, H, W)``: the symmetric tap sums and a constant 1."""
    c, h, w = decoded.shape
    padded = F.pad(decoded[None], (RADIUS,) * 4, mode="replicate")[0]  # any size, even 1x1

    def shifted(di: int, dj: int) -> Tensor:
        return padded[:, RADIUS + di : RADIUS + di + h, RADIUS + dj : RADIUS + dj + w]

    feats = [shifted(0, 0)] + [shifted(di, dj) + shifted(-di, -dj) for di, dj in _OFFSETS[1:]]
    return feats + [torch.ones_like(decoded)]


def fit(decoded: Tensor, target: Tensor, ridge: float = 1e-6) -> Tensor:
    """Least-squares filter ``(C, PARAMS)`` (float64) taking ``decoded`` ``(C, H, W)`` to ``target``.

    A small ridge keeps flat images (singular normal equations) well posed; it grows until
    every coefficient fits the int16 range of :func:`quantize` (undoing a strong blur would
    otherwise ask for huge taps).
    """
    feats = torch.stack(_features(decoded.double()), 1).flatten(2)  # (C, P, N)
    gram = feats @ feats.transpose(1, 2)  # (C, P, P)
    rhs = (feats @ target.double().flatten(1)[..., None])[..., 0]  # (C, P)
    n = feats.shape[-1]
    eye = torch.eye(PARAMS, dtype=torch.float64, device=gram.device)
    for _ in range(12):
        coefs = torch.linalg.solve(gram + ridge * n * eye, rhs)
        if float(coefs.abs().max()) < _LIMIT:
            return coefs
        ridge *= 10
    return torch.zeros_like(coefs)  # not reached for data in [0, 1]; a zero filter is never sent


def quantize(coefs: Tensor) -> Tensor:
    """float coefficients -> the int16 values that are sent (saturating)."""
    return torch.round(coefs * SCALE).clamp(-32768, 32767).to(torch.int16)


def apply(decoded: Tensor, coefs: Tensor) -> Tensor:
    """Filter ``decoded`` ``(C, H, W)`` with the int16 coefficients ``(C, PARAMS)`` (not clamped)."""
    weights = coefs.to(device=decoded.device, dtype=torch.float32) / SCALE
    out = torch.zeros_like(decoded, dtype=torch.float32)
    for p, feat in enumerate(_features(decoded.float())):  # one tap at a time: no (C, PARAMS, H, W) stack
        out += weights[:, p, None, None] * feat
    return out


def to_bytes(coefs: Tensor) -> bytes:
    """The ``filter`` section: ``3 * PARAMS`` little-endian int16."""
    if tuple(coefs.shape) != (3, PARAMS):
        raise ValueError(f"expected (3, {PARAMS}) coefficients, got {tuple(coefs.shape)}")
    return coefs.to(torch.int16).cpu().numpy().astype("<i2").tobytes()


def from_bytes(data: bytes) -> Tensor:
    """Inverse of :func:`to_bytes`; a section of the wrong size is a :class:`BitstreamError`."""
    if len(data) != SECTION_BYTES:
        raise BitstreamError(f"filter section has {len(data)} bytes, expected {SECTION_BYTES}")
    return torch.from_numpy(np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(3, PARAMS))
