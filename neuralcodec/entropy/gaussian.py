"""Gaussian pieces shared by the mean-scale context models (WaLLoC image/audio/video).

* :func:`gaussian_likelihood`: the training-time probability of a unit bin.
* :func:`mean_scale_tables`: the integer coding tables, one per (scale, mean fraction) pair,
  that the exact context models index at coding time.
* :class:`RoundSTE` / :class:`FloorSTE`: rounding with a straight-through gradient, used to
  simulate fixed-point arithmetic in training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .tables import tables_from_pmfs

LIKELIHOOD_BOUND = 1e-9
_K = 2.0**-0.5


def gaussian_likelihood(y: Tensor, mean: Tensor, scale: Tensor, bound: float = LIKELIHOOD_BOUND) -> Tensor:
    """Probability of the unit bin around ``y`` under ``N(mean, scale)``, lower-bounded.

    Computed on ``|y - mean|`` with erfc so the far tail keeps its precision.

    >>> p = gaussian_likelihood(torch.tensor([0.0, 3.0]), torch.zeros(2), torch.ones(2))
    >>> [round(float(v), 4) for v in p]
    [0.3829, 0.006]
    """
    v = (y - mean).abs()
    upper = 0.5 * torch.erfc(-(0.5 - v) / scale * _K)
    lower = 0.5 * torch.erfc(-(-0.5 - v) / scale * _K)
    return (upper - lower).clamp_min(bound)


def mean_scale_tables(scales: Tensor, centres: Tensor, sigmas: float = 6.5) -> tuple[Tensor, Tensor, Tensor]:
    """Coding tables of discretized Gaussians, one per ``(scale, centre)`` pair, scale-major.

    Table ``i * len(centres) + j`` is ``N(centres[j], scales[i])`` on the integers
    ``[-h_i, h_i]`` with ``h_i = ceil(sigmas * scales[i]) + 1``; the mass outside escapes.
    ``centres`` are the fractional parts of the means (in ``[-0.5, 0.5)``) that the caller
    rounds a mean to. Float64 throughout; returns ``tables_from_pmfs``' ``(cdfs, lengths,
    offsets)``.

    >>> cdfs, lengths, offsets = mean_scale_tables(torch.tensor([0.5, 2.0]), torch.tensor([-0.25, 0.25]))
    >>> offsets.tolist()
    [-5, -5, -14, -14]
    """
    scales = scales.detach().to("cpu", torch.float64).reshape(-1)
    centres = centres.detach().to("cpu", torch.float64).reshape(-1)
    halves = torch.ceil(scales * sigmas).long() + 1
    top = int(halves.max())
    v = torch.arange(-top, top + 1, dtype=torch.float64)
    # (scales, centres, values); each tail on the side where erfc is accurate.
    u = (v[None, None, :] - centres[None, :, None]) / scales[:, None, None]
    half_bin = 0.5 / scales[:, None, None]
    pmf = torch.where(
        u > 0,
        0.5 * torch.erfc((u - half_bin) * _K) - 0.5 * torch.erfc((u + half_bin) * _K),
        0.5 * torch.erfc(-(u + half_bin) * _K) - 0.5 * torch.erfc(-(u - half_bin) * _K),
    )
    pmfs, offsets = [], []
    for i, h in enumerate(halves.tolist()):
        for j in range(len(centres)):
            pmfs.append(pmf[i, j, top - h : top + h + 1])
            offsets.append(-h)
    return tables_from_pmfs(pmfs, offsets)


class RoundSTE(torch.autograd.Function):
    """``round(x)`` forward, identity gradient (``RoundSTE.apply(x)``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # noqa: D102
        return g


class FloorSTE(torch.autograd.Function):
    """``floor(x)`` forward, identity gradient (``FloorSTE.apply(x)``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: D102
        return torch.floor(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # noqa: D102
        return g
