"""Mean-scale pieces shared by the context models (WaLLoC image/audio/video).

* :func:`gaussian_likelihood` / :func:`laplace_likelihood`: the training-time probability of a
  unit bin; :func:`bin_likelihood` picks one by family name (:data:`FAMILIES`).
* :func:`mean_scale_tables`: the integer coding tables, one per (scale, mean fraction) pair,
  that the exact context models index at coding time (Gaussian or Laplace).
* :class:`RoundSTE` / :class:`FloorSTE`: rounding with a straight-through gradient, used to
  simulate fixed-point arithmetic in training.

``scale`` is the standard deviation in both families, so a model trained with one family
starts close to right with the other (a Laplace of standard deviation ``s`` has ``b = s/√2``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .tables import tables_from_pmfs

LIKELIHOOD_BOUND = 1e-9
_K = 2.0**-0.5
FAMILIES = ("gaussian", "laplace")
# Table support in standard deviations: the Laplace tail is heavier (its mass beyond 8 sd is
# 1.2e-5; the Gaussian's beyond 6.5 sd is 8e-11); values outside escape.
TABLE_SDS = {"gaussian": 6.5, "laplace": 8.0}


def check_family(family: str) -> str:
    """``family`` if it is one of :data:`FAMILIES`, else a ``ValueError`` that lists them.

    >>> check_family("laplace")
    'laplace'
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return family


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


def laplace_likelihood(y: Tensor, mean: Tensor, scale: Tensor, bound: float = LIKELIHOOD_BOUND) -> Tensor:
    """Probability of the unit bin around ``y`` under a Laplace of mean ``mean`` and standard
    deviation ``scale`` (``b = scale / √2``), lower-bounded.

    Latent residuals of images are heavier-tailed than a Gaussian: on WaLLoC's latents the
    same context nets code about 2 % smaller with this family. Computed on ``|y - mean|``
    with ``expm1`` so the far tail keeps its precision.

    >>> p = laplace_likelihood(torch.tensor([0.0, 3.0]), torch.zeros(2), torch.ones(2))
    >>> [round(float(v), 4) for v in p]
    [0.5069, 0.011]
    """
    b = scale * _K
    v = (y - mean).abs()
    lo = v - 0.5
    # bin [v - 0.5, v + 0.5]: wholly on one side of the mean, or straddling it
    far = -0.5 * torch.exp(-lo.clamp_min(0.0) / b) * torch.expm1(-1.0 / b)
    near = 1.0 - 0.5 * torch.exp(lo.clamp_max(0.0) / b) - 0.5 * torch.exp(-(v + 0.5) / b)
    return torch.where(lo >= 0, far, near).clamp_min(bound)


def bin_likelihood(y: Tensor, mean: Tensor, scale: Tensor, family: str = "gaussian",
                   bound: float = LIKELIHOOD_BOUND) -> Tensor:
    """:func:`gaussian_likelihood` or :func:`laplace_likelihood`, by ``family``.

    >>> y, m, s = torch.tensor([1.0]), torch.zeros(1), torch.ones(1)
    >>> bool(bin_likelihood(y, m, s, "laplace") < bin_likelihood(y, m, s, "gaussian"))
    True
    """
    fn = laplace_likelihood if check_family(family) == "laplace" else gaussian_likelihood
    return fn(y, mean, scale, bound)


def mean_scale_tables(scales: Tensor, centres: Tensor, sigmas: float | None = None, family: str = "gaussian"
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Coding tables of discretized Gaussians (or Laplaces), one per ``(scale, centre)`` pair,
    scale-major.

    Table ``i * len(centres) + j`` is the ``family`` distribution of mean ``centres[j]`` and
    standard deviation ``scales[i]`` on the integers ``[-h_i, h_i]`` with
    ``h_i = ceil(sigmas * scales[i]) + 1`` (``sigmas`` defaults to :data:`TABLE_SDS`); the mass
    outside escapes.
    ``centres`` are the fractional parts of the means (in ``[-0.5, 0.5)``) that the caller
    rounds a mean to. Float64 throughout; returns ``tables_from_pmfs``' ``(cdfs, lengths,
    offsets)``.

    >>> cdfs, lengths, offsets = mean_scale_tables(torch.tensor([0.5, 2.0]), torch.tensor([-0.25, 0.25]))
    >>> offsets.tolist()
    [-5, -5, -14, -14]
    >>> mean_scale_tables(torch.tensor([0.5, 2.0]), torch.tensor([0.0]), family="laplace")[2].tolist()
    [-5, -17]
    """
    check_family(family)
    sigmas = TABLE_SDS[family] if sigmas is None else sigmas
    scales = scales.detach().to("cpu", torch.float64).reshape(-1)
    centres = centres.detach().to("cpu", torch.float64).reshape(-1)
    halves = torch.ceil(scales * sigmas).long() + 1
    top = int(halves.max())
    v = torch.arange(-top, top + 1, dtype=torch.float64)
    # (scales, centres, values)
    if family == "laplace":  # the training likelihood itself, in float64 (accurate in both tails)
        pmf = laplace_likelihood(v[None, None, :], centres[None, :, None], scales[:, None, None], bound=0.0)
    else:  # each tail on the side where erfc is accurate
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
