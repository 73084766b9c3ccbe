"""CDF 9/7 wavelet packet transform by lifting (the JPEG 2000 irreversible wavelet).

Lifting factors the 9/7 filter pair into four "predict/update" steps on the even (``s``) and odd
(``d``) samples plus a scaling (Daubechies & Sweldens 1998; JPEG 2000 Part 1, Annex F):

    d += ALPHA * (s[n] + s[n+1]);   s += BETA  * (d[n] + d[n-1])
    d += GAMMA * (s[n] + s[n+1]);   s += DELTA * (d[n] + d[n-1])
    low = ZETA * s;                 high = -d / ZETA

With periodization the neighbours wrap around (``torch.roll``). With ``ZETA = 1.1496043988602418``
and the sign flip of the high band, the result equals ``pywt.dwt(x, "bior4.4",
mode="periodization")`` coefficient for coefficient (pywt's bior4.4 is the same CDF 9/7 pair,
normalised so that the low-pass filter sums to sqrt(2); JPEG 2000 instead scales low by
``1/K`` and high by ``K/2`` with ``K = 1.230174104914001``, see :data:`JPEG2000_SCALING`).
The tests check this relation numerically.

The packet layout is the one documented in :mod:`neuralcodec.transforms.wavelets`, so
``wpt_lifting97(x, J)`` and ``wpt(x, J, "bior4.4")`` agree to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .wavelets import _check_divisible, _check_input

__all__ = ["wpt_lifting97", "iwpt_lifting97", "dwt97_axis", "idwt97_axis", "JPEG2000_SCALING"]

ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
#: Scaling that makes the lifting output equal pywt's bior4.4 (low = ZETA*s, high = -d/ZETA).
ZETA = 1.1496043988602418
#: JPEG 2000's own normalisation: low = s / K, high = d * K / 2, i.e. relative to pywt:
#: jpeg2000_low = pywt_low / (ZETA * K), jpeg2000_high = -pywt_high * ZETA * K / 2.
JPEG2000_SCALING = 1.230174104914001


def dwt97_axis(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """One level of the periodized CDF 9/7 DWT along ``dim`` (even length): ``(low, high)``.

    >>> import numpy as np, pywt, torch
    >>> x = torch.randn(3, 16, dtype=torch.float64)
    >>> low, high = dwt97_axis(x, -1)
    >>> a, d = pywt.dwt(x.numpy(), "bior4.4", mode="periodization")
    >>> bool(np.allclose(low.numpy(), a) and np.allclose(high.numpy(), d))
    True
    """
    dim = dim % x.ndim
    pairs = x.unflatten(dim, (x.shape[dim] // 2, 2))
    s, d = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    d = d + ALPHA * (s + s.roll(-1, dim))  # roll(-1)[n] = s[n+1]
    s = s + BETA * (d + d.roll(1, dim))  # roll(1)[n] = d[n-1]
    d = d + GAMMA * (s + s.roll(-1, dim))
    s = s + DELTA * (d + d.roll(1, dim))
    return s * ZETA, d * (-1.0 / ZETA)


def idwt97_axis(low: Tensor, high: Tensor, dim: int) -> Tensor:
    """Inverse of :func:`dwt97_axis` (undo the lifting steps in reverse order).

    >>> import torch
    >>> x = torch.randn(2, 8, 6, dtype=torch.float64)
    >>> bool(torch.allclose(idwt97_axis(*dwt97_axis(x, 1), 1), x))
    True
    """
    dim = dim % low.ndim
    s = low * (1.0 / ZETA)
    d = high * (-ZETA)
    s = s - DELTA * (d + d.roll(1, dim))
    d = d - GAMMA * (s + s.roll(-1, dim))
    s = s - BETA * (d + d.roll(1, dim))
    d = d - ALPHA * (s + s.roll(-1, dim))
    return torch.stack([s, d], dim=dim + 1).flatten(dim, dim + 1)


def wpt_lifting97(x: Tensor, levels: int) -> Tensor:
    """Full CDF 9/7 (``bior4.4``) wavelet packet transform by lifting; same layout as ``wpt``.

    >>> import torch
    >>> from neuralcodec.transforms import wpt
    >>> x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    >>> bool(torch.allclose(wpt_lifting97(x, 2), wpt(x, 2, "bior4.4")))
    True
    """
    dims = _check_input(x, levels, "wpt_lifting97")
    batch, channels, *sizes = x.shape
    _check_divisible(sizes, levels, "wpt_lifting97")
    out = x.reshape(batch * channels, 1, *sizes)  # (N, bands, *S)
    for _ in range(levels):
        # Append one bit per axis, axis d-1 first, so that digit = sum_k bit_k 2**k.
        for k in reversed(range(dims)):
            low, high = dwt97_axis(out, 2 + k)
            out = torch.stack([low, high], dim=2).flatten(1, 2)
    return out.reshape(batch, -1, *out.shape[2:])


def iwpt_lifting97(y: Tensor, levels: int) -> Tensor:
    """Inverse of :func:`wpt_lifting97`.

    >>> import torch
    >>> x = torch.randn(1, 2, 16, dtype=torch.float64)
    >>> bool(torch.allclose(iwpt_lifting97(wpt_lifting97(x, 3), 3), x))
    True
    """
    dims = _check_input(y, levels, "iwpt_lifting97")
    batch, channels_bands, *blocks = y.shape
    bands = 2 ** (levels * dims)
    if channels_bands % bands:
        raise ValueError(
            f"iwpt_lifting97: {channels_bands} channels is not a multiple of the {bands} bands "
            f"of a {dims}D, {levels}-level packet transform"
        )
    out = y.reshape(batch * (channels_bands // bands), bands, *blocks)
    for _ in range(levels):
        for k in range(dims):  # undo the last appended bit (axis 0) first
            pairs = out.unflatten(1, (out.shape[1] // 2, 2))
            out = idwt97_axis(pairs[:, :, 0], pairs[:, :, 1], 2 + k)
    return out.reshape(batch, channels_bands // bands, *out.shape[2:])
