"""Per-item (CTC-style) Bjøntegaard deltas and the per-file columns of the ``bench rd`` BD table.

Synthetic curves only; the one run_rd test encodes three 48x40 images with JPEG/WebP.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from neuralcodec.apps import bdrate, bench

RATES = [0.2, 0.45, 0.9, 1.7]
PSNRS = [28.0, 31.5, 34.2, 37.9]  # deliberately not a straight line in log-rate


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_one_item_equals_the_classic_bd_rate(method):
    test_rates, test_psnrs = [0.17, 0.5, 0.8, 1.9], [28.5, 32.4, 34.0, 38.6]
    classic = bdrate.bd_rate(RATES, PSNRS, test_rates, test_psnrs, method=method)
    per = bdrate.bd_rate_per_item({"img": (RATES, PSNRS)}, {"img": (test_rates, test_psnrs)}, method=method)
    assert per.n == 1 and per.skipped == {}
    assert per.values["img"] == pytest.approx(classic, abs=1e-12)
    assert per.mean == pytest.approx(classic, abs=1e-12) and per.median == pytest.approx(classic, abs=1e-12)
    dist = bdrate.bd_psnr_per_item({"img": (RATES, PSNRS)}, {"img": (test_rates, test_psnrs)}, method=method)
    assert dist.mean == pytest.approx(bdrate.bd_psnr(RATES, PSNRS, test_rates, test_psnrs, method=method), abs=1e-12)


def test_shifted_curves_give_the_known_percentages_and_their_mean():
    # every rate of item "a" times 0.8 (-20 %), of "b" times 1.5 (+50 %), of "c" times 0.5 (-50 %)
    anchor = {k: (RATES, [p + off for p in PSNRS]) for k, off in (("a", 0.0), ("b", 3.0), ("c", -2.0))}
    test = {k: ([f * r for r in anchor[k][0]], anchor[k][1]) for k, f in (("a", 0.8), ("b", 1.5), ("c", 0.5))}
    per = bdrate.bd_rate_per_item(anchor, test)
    assert per.values == pytest.approx({"a": -20.0, "b": 50.0, "c": -50.0}, abs=1e-9)
    assert per.mean == pytest.approx((-20.0 + 50.0 - 50.0) / 3, abs=1e-9)
    assert per.median == pytest.approx(-20.0, abs=1e-9)
    assert per.n == 3 and per.n_skipped == 0


def test_unusable_items_are_skipped_with_a_reason_not_averaged():
    anchor = {
        "good": (RATES, PSNRS),
        "no-overlap": (RATES, PSNRS),
        "two-few": (RATES, PSNRS),
        "bumpy": (RATES, PSNRS),
        "only-anchor": (RATES, PSNRS),
    }
    test = {
        "good": ([0.8 * r for r in RATES], PSNRS),
        "no-overlap": (RATES, [p + 20.0 for p in PSNRS]),  # quality ranges do not meet
        "two-few": ([0.5], [30.0]),
        "bumpy": (RATES, [28.0, 31.0, 30.5, 36.0]),  # quality falls while rate rises
        "only-test": (RATES, PSNRS),
    }
    per = bdrate.bd_rate_per_item(anchor, test)
    assert list(per.values) == ["good"]
    assert per.mean == pytest.approx(-20.0, abs=1e-9) and per.n == 1
    reasons = {k: v.split(":")[0] for k, v in per.skipped.items()}
    assert reasons == {
        "no-overlap": "no overlap",
        "two-few": "too few points",
        "bumpy": "non-monotone",
        "only-anchor": "missing from test",
        "only-test": "missing from anchor",
    }
    # every item of either side is accounted for exactly once
    assert set(per.values) | set(per.skipped) == set(anchor) | set(test)
    # without the monotonicity rule the bumpy item gets a number (a pchip fit still exists)
    loose = bdrate.bd_rate_per_item(anchor, test, require_monotone=False)
    assert "bumpy" in loose.values and math.isfinite(loose.values["bumpy"])


def test_an_exactly_repeated_point_is_merged_and_noted_not_skipped():
    # a saturating codec: the last two settings give the same stream
    test_rates, test_psnrs = [0.8 * r for r in RATES] + [0.8 * RATES[-1]], PSNRS + [PSNRS[-1]]
    per = bdrate.bd_rate_per_item({"a": (RATES, PSNRS)}, {"a": (test_rates, test_psnrs)})
    assert per.values["a"] == pytest.approx(-20.0, abs=1e-9)
    assert per.notes == {"a": "test: 1 identical point(s) merged"}
    # the same rate with a different quality is a real non-monotone curve
    bad = bdrate.bd_rate_per_item({"a": (RATES, PSNRS)}, {"a": (RATES + [RATES[-1]], PSNRS + [PSNRS[-1] - 1])})
    assert bad.n == 0 and bad.skipped["a"].startswith("non-monotone")


def test_nothing_usable_gives_none_not_zero():
    per = bdrate.bd_rate_per_item({"a": (RATES, PSNRS)}, {"a": (RATES, [p + 50 for p in PSNRS])})
    assert per.mean is None and per.median is None and per.n == 0 and per.n_skipped == 1
    assert per.to_dict()["skipped"]["a"].startswith("no overlap")


def test_classic_errors_are_still_value_errors_with_a_reason():
    with pytest.raises(ValueError) as info:
        bdrate.bd_rate([1, 2, 3], [30, 31, 32], [1, 2, 3], [30, 31, 32], method="cubic")
    assert isinstance(info.value, bdrate.BDUndefined) and info.value.reason == "too few points"
    with pytest.raises(ValueError, match="unknown BD method"):
        bdrate.bd_rate_per_item({}, {}, method="linear")


# ----------------------------------------------------------------- bench BD table
def _records(codec: str, curves: dict[str, tuple[list, list]], points: list) -> list[dict]:
    return [
        {"codec": codec, "file": f, "quality": q, "bpp": r, "psnr-rgb": p, "ms-ssim": 1 - 10 ** (-p / 20), "error": None}
        for f, (rates, psnrs) in curves.items()
        for q, r, p in zip(points, rates, psnrs)
    ]


def _entry(name: str, records: list[dict], points: list) -> dict:
    spec = bench.CodecSpec(label=name, kind="baseline", points=points)
    files = sorted({r["file"] for r in records})
    return bench.aggregate(spec, records, files, "image", "synthetic")


def test_fixed_rate_bias_shows_in_the_mean_curve_not_per_file():
    """Both codecs sit on the same per-file RD functions, so the per-file BD-rate is 0 for every file;
    the anchor is fixed-rate (same bpp for both files), the test spends different bits per file,
    and that alone moves the BD between the mean curves."""
    levels = {"easy.png": 40.0, "hard.png": 26.0}

    def quality(f: str, rate: float) -> float:  # linear in log-rate: pchip reproduces it exactly
        return levels[f] + 10.0 * math.log10(rate)

    points = [1, 2, 3, 4]
    anchor_rates = {f: [0.25, 0.5, 1.0, 2.0] for f in levels}
    test_rates = {"easy.png": [0.1, 0.2, 0.4, 0.8], "hard.png": [0.5, 1.0, 2.0, 4.0]}
    a = _records("fixed", {f: (rs, [quality(f, r) for r in rs]) for f, rs in anchor_rates.items()}, points)
    t = _records("adaptive", {f: (rs, [quality(f, r) for r in rs]) for f, rs in test_rates.items()}, points)
    entries = [_entry("fixed", a, points), _entry("adaptive", t, points)]
    table = bench.bd_table(entries, "fixed", "image", records={"fixed": a, "adaptive": t})
    row = {r["codec"]: r for r in table["rows"]}["adaptive"]
    per_file = row["per-file"]["bd-rate[psnr-rgb](pchip)"]
    assert per_file["values"] == pytest.approx({"easy.png": 0.0, "hard.png": 0.0}, abs=1e-9)
    assert per_file["n"] == 2 and per_file["skipped"] == {}
    assert abs(row["bd-rate[psnr-rgb](pchip)"]) > 5.0  # the mean curves disagree by several percent
    assert "bd-rate[ms-ssim-db](pchip)" in row["per-file"]
    assert set(table["aggregation"]) == {"mean-curve", "per-file"}


def test_bd_table_keeps_the_mean_curve_keys_and_adds_per_file():
    points = [10, 50]
    a = _records("a", {"x.png": ([0.3, 0.9], [29.0, 34.0]), "y.png": ([0.3, 0.9], [35.0, 41.0])}, points)
    b = _records("b", {"x.png": ([0.2, 0.6], [29.5, 33.0]), "y.png": ([0.3, 0.9], [45.0, 48.0])}, points)
    entries = [_entry("a", a, points), _entry("b", b, points)]
    plain = bench.bd_table(entries, "a", "image")
    full = bench.bd_table(entries, "a", "image", records={"a": a, "b": b})
    for r_plain, r_full in zip(plain["rows"], full["rows"]):
        assert {k: v for k, v in r_full.items() if k != "per-file"} == r_plain
        assert "per-file" not in r_plain
    row_b = full["rows"][1]["per-file"]["bd-rate[psnr-rgb](pchip)"]
    assert row_b["n"] == 1 and row_b["skipped"]["y.png"].startswith("no overlap")
    assert row_b["mean"] == pytest.approx(bdrate.bd_rate([0.3, 0.9], [29.0, 34.0], [0.2, 0.6], [29.5, 33.0], "pchip"))
    md = bench.bd_markdown(full)
    assert "per-file BD-rate psnr-rgb pchip mean (%)" in md and "Mean-curve columns" in md
    assert "| 1 / 1 |" in md and "- b, psnr-rgb: skipped no overlap (1): y.png" in md
    assert "per-file" not in bench.bd_markdown(plain)


def test_per_file_curves_drop_failed_points_but_keep_the_file():
    recs = [
        {"file": "a.png", "quality": 1, "bpp": 0.5, "psnr-rgb": 30.0, "error": None},
        {"file": "a.png", "quality": 2, "error": "ValueError: boom"},
        {"file": "*", "quality": None, "error": "codec-level"},
    ]
    curves = bench.per_file_curves(recs, [1, 2], "bpp", "psnr-rgb", files=["a.png", "b.png"])
    assert curves == {"a.png": ([0.5], [30.0]), "b.png": ([], [])}


def test_run_rd_writes_per_file_columns(tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48] / 48
    for i in range(3):
        img = 0.5 + 0.4 * np.sin((i + 2) * xx * 3 + yy * 2)[..., None] + 0.05 * rng.standard_normal((40, 48, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(data / f"img{i}.png")
    out = tmp_path / "out"
    bench.run_rd(data, ["jpeg", "webp"], out, anchor="jpeg", qualities={"jpeg": [20, 60, 90], "webp": [20, 60, 90]},
                 plots=False, progress=False)
    table = json.loads((out / "bd_rate.json").read_text())
    rows = {r["codec"]: r for r in table["rows"]}
    own = rows["jpeg"]["per-file"]["bd-rate[psnr-rgb](pchip)"]
    assert own["n"] + own["n_skipped"] == 3 and all(v == pytest.approx(0.0, abs=1e-9) for v in own["values"].values())
    webp = rows["webp"]["per-file"]["bd-rate[psnr-rgb](pchip)"]
    assert webp["n"] + webp["n_skipped"] == 3
    assert "per-file BD-rate" in (out / "bd_rate.md").read_text()
