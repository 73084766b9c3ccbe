"""Bjøntegaard delta rate and delta distortion between two rate-distortion curves.

The Bjøntegaard method (VCEG-M33, 2001) compares two RD curves by the average gap
between them over the range where both are measured:

* **BD-rate** (percent): fit log10(rate) as a function of distortion for each curve,
  integrate both fits over the overlapping distortion range, and turn the mean difference
  of log-rates into a percentage, ``(10**mean_diff - 1) * 100``. Negative means the test
  codec needs fewer bits than the anchor for the same quality.
* **BD-PSNR** (or BD-distortion, in the unit of the distortion, dB for PSNR): fit the
  distortion as a function of log10(rate) and take the mean vertical gap over the
  overlapping log-rate range. Positive means the test codec is better.

Two fits:

``method="cubic"`` (the default)
    The original method: a least-squares cubic polynomial through all points
    (``numpy.polyfit`` of degree 3), integrated exactly. Needs at least 4 points per curve.
``method="pchip"``
    Piecewise cubic Hermite interpolation (Fritsch–Carlson monotone slopes, the same
    interpolant as ``scipy.interpolate.PchipInterpolator``), integrated exactly piece by
    piece, as in the newer VCEG/JVET reporting tools (JVET-K0491 style). Needs at least
    2 points; it passes through every point, so it cannot overshoot between them.

Points are sorted by the fitted variable; repeated values of it are an error (the curve
would not be a function). Curves that do not overlap are an error, not a number.

>>> rates = [0.25, 0.5, 1.0, 2.0]; psnrs = [30.0, 33.0, 36.0, 39.0]
>>> round(bd_rate(rates, psnrs, [0.8 * r for r in rates], psnrs), 6)
-20.0
>>> round(bd_psnr(rates, psnrs, rates, [p + 0.5 for p in psnrs]), 6)
0.5
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

METHODS = ("cubic", "pchip")
DEFAULT_METHOD = "cubic"


def _check_curve(rate: Sequence[float], dist: Sequence[float], method: str, label: str):
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(dist, dtype=np.float64).ravel()
    if r.shape != d.shape:
        raise ValueError(f"{label}: {r.size} rates but {d.size} distortions")
    need = 4 if method == "cubic" else 2
    if r.size < need:
        raise ValueError(f"{label}: BD ({method}) needs at least {need} points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise ValueError(f"{label}: rates and distortions must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{label}: rates must be positive")
    return np.log10(r), d


# ----------------------------------------------------------------------------- fits
def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch–Carlson derivatives at the knots (shape-preserving), scipy's convention."""
    h = np.diff(x)
    m = np.diff(y) / h
    n = x.size
    if n == 2:
        return np.array([m[0], m[0]])
    d = np.zeros(n)
    for k in range(1, n - 1):
        if m[k - 1] * m[k] > 0:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def edge(h0: float, h1: float, m0: float, m1: float) -> float:
        # One-sided three-point estimate, kept shape-preserving.
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(e) > abs(3 * m0):
            return 3 * m0
        return e

    d[0] = edge(h[0], h[1], m[0], m[1])
    d[-1] = edge(h[-1], h[-2], m[-1], m[-2])
    return d


def _integrate_pchip(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(x.size - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        m = (y[k + 1] - y[k]) / h
        c0, c1 = y[k], d[k]
        c2 = (3 * m - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * m) / h**2

        def antiderivative(t: float) -> float:
            return c0 * t + c1 * t**2 / 2 + c2 * t**3 / 3 + c3 * t**4 / 4

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def _integrate_cubic(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    poly = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(poly, hi) - np.polyval(poly, lo))


def _mean_gap(
    x_anchor: np.ndarray, y_anchor: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, method: str
) -> float:
    """Mean of (test fit - anchor fit) of y over the overlap of the x ranges."""
    curves = []
    for x, y, label in ((x_anchor, y_anchor, "anchor"), (x_test, y_test, "test")):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        if np.any(np.diff(x) == 0):
            raise ValueError(f"{label}: repeated values of the fitted variable; the curve is not a function")
        curves.append((x, y))
    (xa, ya), (xt, yt) = curves
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        raise ValueError("the two curves do not overlap; no Bjøntegaard delta exists")
    integrate = _integrate_cubic if method == "cubic" else _integrate_pchip
    return (integrate(xt, yt, lo, hi) - integrate(xa, ya, lo, hi)) / (hi - lo)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown BD method {method!r}; use one of {', '.join(METHODS)}")


def bd_rate(
    rate_anchor: Sequence[float],
    dist_anchor: Sequence[float],
    rate_test: Sequence[float],
    dist_test: Sequence[float],
    method: str = DEFAULT_METHOD,
) -> float:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent (negative = saving).

    ``dist`` is a quality where higher is better (PSNR in dB, MS-SSIM in dB, SI-SDR).

    >>> r = [100, 200, 400, 800]; q = [30, 33, 35, 36]
    >>> round(bd_rate(r, q, [2 * v for v in r], q, method="pchip"), 6)
    100.0
    """
    _check_method(method)
    lra, da = _check_curve(rate_anchor, dist_anchor, method, "anchor")
    lrt, dt = _check_curve(rate_test, dist_test, method, "test")
    gap = _mean_gap(da, lra, dt, lrt, method)
    return float((10.0**gap - 1.0) * 100.0)


def bd_psnr(
    rate_anchor: Sequence[float],
    dist_anchor: Sequence[float],
    rate_test: Sequence[float],
    dist_test: Sequence[float],
    method: str = DEFAULT_METHOD,
) -> float:
    """Bjøntegaard delta distortion (BD-PSNR for PSNR) of ``test`` against ``anchor``.

    In the unit of ``dist`` (dB for PSNR); positive means the test codec is better.

    >>> r = [100, 200, 400, 800]; q = [30, 33, 35, 36]
    >>> round(bd_psnr(r, q, r, [v - 1 for v in q], method="pchip"), 6)
    -1.0
    """
    _check_method(method)
    lra, da = _check_curve(rate_anchor, dist_anchor, method, "anchor")
    lrt, dt = _check_curve(rate_test, dist_test, method, "test")
    return float(_mean_gap(lra, da, lrt, dt, method))


def is_number(value: float) -> bool:
    """True for a finite float (helper for tables that mix numbers and 'n/a')."""
    return isinstance(value, (int, float)) and math.isfinite(value)


__all__ = ["bd_rate", "bd_psnr", "METHODS", "DEFAULT_METHOD"]
