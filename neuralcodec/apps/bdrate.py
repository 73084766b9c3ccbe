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
would not be a function). Curves that do not overlap are an error, not a number
(:class:`BDUndefined`, a ``ValueError`` that also says why in one word).

Two ways to summarise a test set (both legitimate, they answer different questions):

* **mean curve**: average rate and quality over the items at each quality point, then one
  BD between the two averaged curves (:func:`bd_rate` on the means);
* **per item** (the MPEG/JVET common-test-conditions way, per sequence there, per file here):
  one BD between each item's own two curves, then the mean of those percentages
  (:func:`bd_rate_per_item`). A fixed-rate codec (every item at the same bpp) spends many
  bits on easy items, which lifts its mean quality in dB; the per-item view does not mix
  items before fitting, so it does not reward that.

>>> rates = [0.25, 0.5, 1.0, 2.0]; psnrs = [30.0, 33.0, 36.0, 39.0]
>>> round(bd_rate(rates, psnrs, [0.8 * r for r in rates], psnrs), 6)
-20.0
>>> round(bd_psnr(rates, psnrs, rates, [p + 0.5 for p in psnrs]), 6)
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

METHODS = ("cubic", "pchip")
DEFAULT_METHOD = "cubic"


class BDUndefined(ValueError):
    """No Bjøntegaard delta exists for these curves; ``reason`` says why in a few words.

    Reasons: ``"too few points"``, ``"length mismatch"``, ``"not finite"``,
    ``"rate not positive"``, ``"repeated values"``, ``"no overlap"`` (and, per item,
    ``"non-monotone"``, ``"missing from anchor"``, ``"missing from test"``).

    >>> try:
    ...     bd_rate([1, 2], [30, 31], [1, 2], [40, 41], method="pchip")
    ... except BDUndefined as e:
    ...     e.reason
    'no overlap'
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_curve(rate: Sequence[float], dist: Sequence[float], method: str, label: str):
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(dist, dtype=np.float64).ravel()
    if r.shape != d.shape:
        raise BDUndefined("length mismatch", f"{label}: {r.size} rates but {d.size} distortions")
    need = 4 if method == "cubic" else 2
    if r.size < need:
        raise BDUndefined("too few points", f"{label}: BD ({method}) needs at least {need} points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise BDUndefined("not finite", f"{label}: rates and distortions must be finite")
    if np.any(r <= 0):
        raise BDUndefined("rate not positive", f"{label}: rates must be positive")
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
            raise BDUndefined(
                "repeated values", f"{label}: repeated values of the fitted variable; the curve is not a function"
            )
        curves.append((x, y))
    (xa, ya), (xt, yt) = curves
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        raise BDUndefined(
            "no overlap",
            f"the two curves do not overlap (anchor {xa[0]:.4g}..{xa[-1]:.4g}, test {xt[0]:.4g}..{xt[-1]:.4g});"
            " no Bjøntegaard delta exists",
        )
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


# ------------------------------------------------------------------------- per item
Curve = tuple[Sequence[float], Sequence[float]]


@dataclass(frozen=True)
class PerItemBD:
    """Per-item Bjøntegaard deltas and their aggregate (see :func:`bd_rate_per_item`).

    ``values`` holds the delta of every item where it exists, ``skipped`` every other item
    with its reason (``"<reason>: <detail>"``, the reason as in :class:`BDUndefined`).
    ``mean`` and ``median`` are over ``values`` only, ``None`` when no item has a delta.
    ``notes`` remarks on items that were used after a harmless clean-up (identical points merged).

    >>> r = PerItemBD(values={"a": -10.0, "b": -30.0}, skipped={"c": "no overlap: ..."}, method="pchip")
    >>> r.mean, r.median, r.n, r.n_skipped
    (-20.0, -20.0, 2, 1)
    """

    values: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    method: str = "pchip"
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """How many items have a delta (enter the mean)."""
        return len(self.values)

    @property
    def n_skipped(self) -> int:
        """How many items have none (listed in ``skipped``)."""
        return len(self.skipped)

    @property
    def mean(self) -> float | None:
        """Arithmetic mean of the per-item deltas, as the CTC spreadsheets average them."""
        return float(np.mean(list(self.values.values()))) if self.values else None

    @property
    def median(self) -> float | None:
        """Median of the per-item deltas (robust to one odd item)."""
        return float(np.median(list(self.values.values()))) if self.values else None

    def to_dict(self) -> dict:
        """A JSON-ready dict: mean, median, n, n_skipped, method, values, skipped, notes.

        >>> PerItemBD(values={"a": 1.0}).to_dict()["n"]
        1
        """
        return {
            "mean": self.mean,
            "median": self.median,
            "n": self.n,
            "n_skipped": self.n_skipped,
            "method": self.method,
            "values": dict(self.values),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
        }


def _merge_identical(rate: Sequence[float], dist: Sequence[float]) -> tuple[list[float], list[float], int]:
    """The curve without repeated identical (rate, dist) points, and how many were merged.

    A codec that saturates (a JPEG 2000 ratio the file reaches losslessly, say) gives the
    same stream at two settings: the same point twice, no information, no reason to drop
    the item. Points that share a rate or a quality but not both are kept (and judged).
    """
    seen: set[tuple[float, float]] = set()
    rates: list[float] = []
    dists: list[float] = []
    for r, d in zip(rate, dist):
        if (float(r), float(d)) in seen:
            continue
        seen.add((float(r), float(d)))
        rates.append(float(r))
        dists.append(float(d))
    return rates, dists, len(list(rate)) - len(rates)


def _non_monotone(rate: Sequence[float], dist: Sequence[float]) -> str | None:
    """Why the curve's quality does not rise strictly with rate, or None when it does."""
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(dist, dtype=np.float64).ravel()
    if r.shape != d.shape or r.size < 2:
        return None  # the BD call itself reports these
    order = np.argsort(r, kind="stable")
    r, d = r[order], d[order]
    bad = np.flatnonzero(np.diff(d) <= 0)
    if bad.size == 0:
        return None
    k = int(bad[0])
    return f"quality {d[k]:.4g} -> {d[k + 1]:.4g} while rate {r[k]:.4g} -> {r[k + 1]:.4g}"


def _per_item(
    fn: Callable[..., float],
    anchor_curves: Mapping[str, Curve],
    test_curves: Mapping[str, Curve],
    method: str,
    require_monotone: bool,
) -> PerItemBD:
    _check_method(method)
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    items = list(anchor_curves) + [k for k in test_curves if k not in anchor_curves]
    for item in items:
        if item not in test_curves:
            skipped[item] = "missing from test: the test codec has no curve for this item"
            continue
        if item not in anchor_curves:
            skipped[item] = "missing from anchor: the anchor has no curve for this item"
            continue
        (ra, da), (rt, dt) = anchor_curves[item], test_curves[item]
        note = ""
        if len(ra) == len(da) and len(rt) == len(dt):  # else the BD call reports the mismatch
            ra, da, merged_a = _merge_identical(ra, da)
            rt, dt, merged_t = _merge_identical(rt, dt)
            merged = [f"{label}: {n} identical point(s) merged" for label, n in (("anchor", merged_a), ("test", merged_t)) if n]
            note = "; ".join(merged)
        if require_monotone:
            why = [f"{label} {w}" for label, w in (("anchor", _non_monotone(ra, da)), ("test", _non_monotone(rt, dt))) if w]
            if why:
                skipped[item] = "non-monotone: " + "; ".join(why) + (f" ({note})" if note else "")
                continue
        try:
            values[item] = fn(ra, da, rt, dt, method=method)
        except BDUndefined as e:
            skipped[item] = f"{e.reason}: {e}" + (f" ({note})" if note else "")
            continue
        if note:
            notes[item] = note
    return PerItemBD(values=values, skipped=skipped, method=method, notes=notes)


def bd_rate_per_item(
    anchor_curves: Mapping[str, Curve],
    test_curves: Mapping[str, Curve],
    method: str = "pchip",
    require_monotone: bool = True,
) -> PerItemBD:
    """BD-rate of every item's own curve, test against anchor, and their mean (CTC style).

    ``anchor_curves`` and ``test_curves`` map an item (a file, a sequence) to its
    ``(rates, dists)``. Every item of either dict ends up in exactly one of ``values``
    (its BD-rate in percent) or ``skipped`` (with the reason: missing from one side, too
    few points, no overlapping quality range, non-monotone, ...): nothing is dropped
    silently, and the mean is over ``values`` only. With ``require_monotone`` (the
    default) an item whose quality does not rise strictly with rate on either curve is
    skipped: its log-rate is not a single-valued function of quality, so the fit would
    mix branches. A point repeated exactly (same rate and quality, e.g. a codec that
    saturates) is merged first and the item used, with a line in ``notes``. The default
    fit is pchip, which needs only two points per curve.

    >>> a = {"x": ([1, 2, 4], [30, 33, 36]), "y": ([1, 2, 4], [40, 42, 44])}
    >>> t = {"x": ([0.5, 1, 2], [30, 33, 36]), "y": ([1, 2, 4], [20, 21, 22])}
    >>> r = bd_rate_per_item(a, t)
    >>> round(r.values["x"], 6), r.n, r.skipped["y"].split(":")[0]
    (-50.0, 1, 'no overlap')
    """
    return _per_item(bd_rate, anchor_curves, test_curves, method, require_monotone)


def bd_psnr_per_item(
    anchor_curves: Mapping[str, Curve],
    test_curves: Mapping[str, Curve],
    method: str = "pchip",
    require_monotone: bool = True,
) -> PerItemBD:
    """BD-distortion (BD-PSNR for PSNR) of every item's own curve and their mean; as :func:`bd_rate_per_item`.

    >>> a = {"x": ([1, 2, 4], [30, 33, 36])}
    >>> round(bd_psnr_per_item(a, {"x": ([1, 2, 4], [31, 34, 37])}).mean, 6)
    1.0
    """
    return _per_item(bd_psnr, anchor_curves, test_curves, method, require_monotone)


def is_number(value: float) -> bool:
    """True for a finite float (helper for tables that mix numbers and 'n/a')."""
    return isinstance(value, (int, float)) and math.isfinite(value)


__all__ = [
    "bd_rate",
    "bd_psnr",
    "bd_rate_per_item",
    "bd_psnr_per_item",
    "PerItemBD",
    "BDUndefined",
    "METHODS",
    "DEFAULT_METHOD",
]
