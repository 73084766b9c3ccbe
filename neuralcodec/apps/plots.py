"""Rate-distortion plots (matplotlib, Agg backend): one curve per codec, PNG and SVG.

>>> import tempfile, pathlib
>>> results = [{"name": "a", "results": {"bpp": [0.2, 0.5, 1.0], "psnr-rgb": [28.0, 31.0, 34.0]}}]
>>> out = pathlib.Path(tempfile.mkdtemp()) / "psnr"
>>> sorted(p.suffix for p in plot_rd(results, "bpp", "psnr-rgb", out, ylabel="PSNR (dB)"))
['.png', '.svg']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

# SVG text as text (not paths) keeps the files small; a fixed hash salt keeps SVG ids
# stable between runs, so re-running the benchmark does not rewrite identical plots.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "neuralcodec"}


def plot_rd(
    results: Sequence[dict],
    x_key: str,
    y_key: str,
    path_stem: str | Path,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    log_x: bool = False,
    transform=None,
) -> list[Path]:
    """Plot ``results[i]["results"][y_key]`` against ``[x_key]`` for each codec; write PNG + SVG.

    ``results`` are codec result dicts in CompressAI's layout. ``transform`` maps each y
    value (e.g. MS-SSIM to dB). Points that are not finite are left out. Returns the
    written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        plotted = 0
        for entry in results:
            res = entry.get("results", {})
            xs, ys = res.get(x_key, []), res.get(y_key, [])
            pts = []
            for x, y in zip(xs, ys):
                if x is None or y is None:
                    continue
                y = transform(y) if transform else y
                if math.isfinite(x) and math.isfinite(y):
                    pts.append((x, y))
            if not pts:
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3.5, label=entry.get("name", "?"))
            plotted += 1
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel or x_key)
        ax.set_ylabel(ylabel or y_key)
        if title:
            ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if plotted:
            ax.legend(loc="best")
        fig.tight_layout()
        paths = []
        for suffix, kwargs in ((".png", {"dpi": 110}), (".svg", {"metadata": {"Date": None}})):
            path = path_stem.with_suffix(suffix)
            fig.savefig(path, **kwargs)
            paths.append(path)
        plt.close(fig)
    return paths


__all__ = ["plot_rd"]
