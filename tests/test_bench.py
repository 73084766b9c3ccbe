"""Tests of the rate-distortion benchmark: metrics, Bjøntegaard deltas, baselines, run_rd, CLI.

All data is tiny and made here (48x40 images, short sine waves).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuralcodec.apps import baselines, bdrate, bench, metrics
from neuralcodec.apps.baselines import Audio, Baseline, encode_at_bpp, get_baseline

# ------------------------------------------------------------------------------ data


def smooth_image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(1, 6, 3)
        chans.append(0.5 + 0.35 * np.sin(a * xx * 3 + b * yy * 2 + c) + 0.05 * rng.standard_normal((h, w)))
    return (np.clip(np.stack(chans, -1), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    d = tmp_path / "images"
    d.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(i)).save(d / f"img{i}.png")
    return d


def sine(seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    chans = [0.4 * np.sin(2 * np.pi * (330 + 110 * c) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) for c in range(channels)]
    return Audio(np.stack(chans).astype(np.float32), rate)


def best_lag(ref: np.ndarray, est: np.ndarray) -> int:
    n = ref.size
    corr = np.fft.irfft(np.fft.rfft(est, 2 * n) * np.conj(np.fft.rfft(ref, 2 * n)))
    k = int(np.argmax(corr))
    return k if k < n else k - 2 * n


# --------------------------------------------------------------------------- metrics


def test_psnr_identical_is_inf_and_known_value():
    x = smooth_image(0)
    assert metrics.psnr(x, x) == math.inf
    y = x.astype(np.float64) / 255 + 0.01  # MSE 1e-4 -> 40 dB
    assert metrics.psnr(x.astype(np.float64) / 255, y) == pytest.approx(40.0, abs=1e-9)
    # (C,H,W) tensor and (H,W,C) uint8 layouts give the same value
    chw = torch.from_numpy(x).permute(2, 0, 1).float() / 255
    noisy = (chw + 0.02 * torch.randn_like(chw)).clamp(0, 1)
    hwc = (noisy.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert metrics.psnr(chw, (torch.from_numpy(hwc).permute(2, 0, 1).float() / 255)) == pytest.approx(
        metrics.psnr(x, hwc), abs=1e-4
    )


def test_ms_ssim_small_images_and_ordering():
    x = smooth_image(1)
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    light = np.clip(x + rng.normal(0, 4, x.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
    assert 1.0 > metrics.ms_ssim(x, light) > metrics.ms_ssim(x, heavy) > 0.0
    tiny = x[:7, :9]  # smaller than the 11-tap window: one scale, 7-tap window
    assert metrics.ms_ssim_scales(7, 9) == (1, 7)
    assert 0.0 < metrics.ms_ssim(tiny, heavy[:7, :9]) < 1.0


def test_ms_ssim_matches_pytorch_msssim_on_full_size():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    rng = np.random.default_rng(3)
    x = smooth_image(5, 192, 176)  # large enough for all five scales
    y = np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8)
    ours = metrics.ms_ssim(x, y)
    tx = torch.from_numpy(x).permute(2, 0, 1)[None].double() / 255
    ty = torch.from_numpy(y).permute(2, 0, 1)[None].double() / 255
    ref = pytorch_msssim.ms_ssim(tx, ty, data_range=1.0).item()
    assert ours == pytest.approx(ref, abs=2e-3)


def test_audio_metrics():
    a = sine(0.5).samples
    noise = 0.01 * np.random.default_rng(0).standard_normal(a.shape).astype(np.float32)
    assert metrics.snr(a, a) == math.inf
    assert metrics.si_sdr(a, a + noise) == pytest.approx(metrics.si_sdr(a, 3.0 * (a + noise)), abs=1e-6)
    assert metrics.si_sdr(a, a + noise) > metrics.si_sdr(a, a + 10 * noise)
    # SNR is not scale invariant: a 0.5 gain costs exactly 6.02 dB
    assert metrics.snr(a, 0.5 * a) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert metrics.mel_distance(a, a, 44100) == 0.0
    assert metrics.mel_distance(a, a + noise, 44100) < metrics.mel_distance(a, a + 10 * noise, 44100)


# -------------------------------------------------------------------------- BD-rate


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_rate_of_a_uniformly_cheaper_curve_is_exact(method):
    rate = [0.12, 0.3, 0.55, 1.1, 1.9]
    psnr = [27.0, 30.5, 33.0, 36.2, 39.0]
    assert bdrate.bd_rate(rate, psnr, [0.8 * r for r in rate], psnr, method=method) == pytest.approx(-20.0, abs=1e-9)
    assert bdrate.bd_rate(rate, psnr, rate, psnr, method=method) == pytest.approx(0.0, abs=1e-9)
    # same curve, 0.7 dB better everywhere
    assert bdrate.bd_psnr(rate, psnr, rate, [p + 0.7 for p in psnr], method=method) == pytest.approx(0.7, abs=1e-9)
    # order of the points does not matter
    assert bdrate.bd_rate(rate[::-1], psnr[::-1], [0.8 * r for r in rate], psnr, method=method) == pytest.approx(-20.0)


def test_bd_rate_hand_computed_linear_case():
    # anchor: log10 R = (D - 30) / 10, test: log10 R = (D - 32) / 10 -> same slope, 2 dB better
    d = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    ra, rt = 10 ** ((d - 30) / 10), 10 ** ((d - 32) / 10)
    expected = (10 ** (-0.2) - 1) * 100  # -36.9 %
    for method in bdrate.METHODS:
        # both curves are sampled at the same D, so the overlap in D is all of [30, 38]
        assert bdrate.bd_rate(ra, d, rt, d, method=method) == pytest.approx(expected, abs=1e-9)
        # BD-PSNR over the overlapping log-rate range [0, 0.6]: exactly +2 dB
        assert bdrate.bd_psnr(ra, d, rt, d, method=method) == pytest.approx(2.0, abs=1e-9)


def test_bd_rate_errors():
    with pytest.raises(ValueError, match="overlap"):
        bdrate.bd_rate([1, 2, 3, 4], [30, 31, 32, 33], [1, 2, 3, 4], [40, 41, 42, 43])
    with pytest.raises(ValueError, match="at least 4"):
        bdrate.bd_rate([1, 2, 3], [30, 31, 32], [1, 2, 3], [30, 31, 32])
    with pytest.raises(ValueError, match="unknown BD method"):
        bdrate.bd_rate([1, 2], [30, 31], [1, 2], [30, 31], method="linear")


def test_pchip_integral_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(1)
    for n in (2, 3, 6):
        x = np.sort(rng.uniform(0, 10, n))
        y = np.cumsum(rng.uniform(-1, 3, n))
        lo, hi = x[0] + 0.1, x[-1] - 0.2
        ref = interpolate.PchipInterpolator(x, y).integrate(lo, hi)
        assert bdrate._integrate_pchip(x, y, lo, hi) == pytest.approx(ref, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------------ baselines


@pytest.mark.parametrize("name", ["jpeg", "webp", "jpeg2000", "avif"])
def test_image_baselines_round_trip(name):
    b = get_baseline(name)
    if not b.available:
        pytest.skip(b.unavailable_reason())
    x = smooth_image(2)
    lo_q, hi_q = b.qualities[0], b.qualities[-1]
    lo, hi = b.encode(x, lo_q), b.encode(x, hi_q)
    assert len(lo) < len(hi)  # the sweep goes from low to high rate
    y = b.decode(hi, like=x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert metrics.psnr(x, y) > metrics.psnr(x, b.decode(lo, like=x))


def test_unavailable_baseline_is_reported_not_crashed(monkeypatch):
    b = get_baseline("jxl")
    monkeypatch.setattr(b, "_plugin_module", "surely_not_an_installed_module_xyz")
    assert not b.available and "not installed" in b.unavailable_reason()
    with pytest.raises(baselines.BaselineUnavailableError):
        b.encode(smooth_image(0), 50)
    with pytest.raises(KeyError, match="unknown baseline"):
        get_baseline("nope")


def test_encode_at_bpp_picks_the_closest_rate():
    x = smooth_image(4, 64, 64)
    target = 1.5
    q, data, dec = encode_at_bpp("jpeg", x, target)
    bpp = len(data) * 8 / (64 * 64)
    jpeg = get_baseline("jpeg")
    for nq in (q - 1, q + 1):
        if 1 <= nq <= 95:
            assert abs(bpp - target) <= abs(len(jpeg.encode(x, nq)) * 8 / 4096 - target)
    assert dec.shape == x.shape
    # continuous knob (compression ratio, larger = fewer bits)
    if get_baseline("jpeg2000").available:
        _, data, _ = encode_at_bpp("jpeg2000", x, 1.0)
        assert abs(len(data) * 8 / 4096 - 1.0) < 0.2


def test_opus_alignment_and_quality():
    clip = sine(1.0)
    opus = get_baseline("opus")
    data = opus.encode(clip, 64)
    out = opus.decode(data, like=clip)
    assert out.samples.shape == clip.samples.shape and out.sample_rate == 44100
    assert best_lag(clip.samples[0], out.samples[0]) == 0  # priming samples (pre-skip) removed
    assert metrics.snr(clip.samples, out.samples) > 10.0
    kbps = opus.payload_size(data) * 8 / clip.seconds / 1000
    assert 20 < kbps < 100 and opus.payload_size(data) < len(data)


@pytest.mark.parametrize("name", ["mp3", "vorbis"])
def test_other_audio_baselines_are_aligned(name):
    clip = sine(1.0)
    b = get_baseline(name)
    if not b.available:
        pytest.skip(b.unavailable_reason())
    out = b.decode(b.encode(clip, b.qualities[-2]), like=clip)
    assert out.samples.shape == clip.samples.shape
    assert best_lag(clip.samples[1], out.samples[1]) == 0
    assert metrics.si_sdr(clip.samples, out.samples) > 15.0


# ---------------------------------------------------------------------------- run_rd

IMAGE_KEYS = {"bpp", "psnr-rgb", "ms-ssim", "encoding_time", "decoding_time"}


def test_run_rd_writes_compressai_layout(image_dir, tmp_path):
    out = tmp_path / "out"
    summary = bench.run_rd(
        image_dir,
        ["jpeg", "webp"],
        out,
        anchor="jpeg",
        qualities={"jpeg": [30, 80], "webp": [30, 80]},
        progress=False,
    )
    assert summary["modality"] == "image" and summary["files"] == 3 and summary["errors"] == 0
    for name in ("jpeg", "webp"):
        entry = json.loads((out / f"{name}.json").read_text())
        assert {"name", "description", "results"} <= set(entry)
        assert IMAGE_KEYS <= set(entry["results"])
        assert entry["results"]["quality"] == [30, 80]
        assert entry["results"]["n_files"] == [3, 3]
        bpp = entry["results"]["bpp"]
        assert len(bpp) == 2 and bpp[0] < bpp[1]
        records = [json.loads(line) for line in (out / f"{name}.per_file.jsonl").read_text().splitlines()]
        assert len(records) == 6 and all(r["error"] is None for r in records)
        # the JSON mean is the mean of the per-file records
        at30 = [r["psnr-rgb"] for r in records if r["quality"] == 30]
        assert entry["results"]["psnr-rgb"][0] == pytest.approx(np.mean(at30))
    table = json.loads((out / "bd_rate.json").read_text())
    rows = {r["codec"]: r for r in table["rows"]}
    # two points per curve: cubic needs 4 (n/a with a note), pchip works
    assert rows["webp"]["bd-rate[psnr-rgb](cubic)"] is None and rows["webp"]["notes"]
    assert rows["jpeg"]["bd-rate[psnr-rgb](pchip)"] == pytest.approx(0.0, abs=1e-9)
    assert isinstance(rows["webp"]["bd-rate[psnr-rgb](pchip)"], float)
    assert "| webp |" in (out / "bd_rate.md").read_text()
    if summary["plots"]:
        assert (out / "rd_psnr.png").stat().st_size > 1000 and (out / "rd_psnr.svg").is_file()


class _Counting(Baseline):
    """A fake image baseline (PNG through Pillow, rate = quality) that counts its encodes."""

    name = "counting"
    modality = "image"
    qualities = (1, 2)
    calls = 0

    def encode(self, media, quality):
        type(self).calls += 1
        return get_baseline("jpeg").encode(media, 40 + 20 * int(quality))

    def decode(self, data, like=None):
        return get_baseline("jpeg").decode(data, like=like)


class _Failing(Baseline):
    name = "failing"
    modality = "image"
    qualities = (1, 2)

    def encode(self, media, quality):
        if np.array_equal(media, smooth_image(1)):  # PNG is lossless: this is exactly img1
            raise RuntimeError("boom on img1")
        return get_baseline("jpeg").encode(media, 50)

    def decode(self, data, like=None):
        return get_baseline("jpeg").decode(data, like=like)


def test_failing_codec_is_isolated_and_recorded(image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(baselines._FACTORIES, "failing", _Failing)
    out = tmp_path / "out"
    summary = bench.run_rd(
        image_dir, ["jpeg", "failing", "not-a-codec"], out, qualities={"jpeg": [50, 80]}, plots=False, progress=False
    )
    failing = json.loads((out / "failing.json").read_text())
    assert [e["file"] for e in failing["errors"]] == ["img1.png", "img1.png"]
    assert all("boom on img1" in e["error"] for e in failing["errors"])
    assert failing["results"]["n_files"] == [2, 2]  # the other two files still measured
    missing = json.loads((out / "not-a-codec.json").read_text())
    assert missing["errors"] and missing["errors"][0]["file"] == "*"
    jpeg = json.loads((out / "jpeg.json").read_text())
    assert jpeg["errors"] == [] and jpeg["results"]["n_files"] == [3, 3]
    assert summary["errors"] == 3
    # a resumed run re-records the codec-level failure once, not twice
    bench.run_rd(image_dir, ["not-a-codec"], out, resume=True, plots=False, progress=False)
    assert len((out / "not-a-codec.per_file.jsonl").read_text().splitlines()) == 1


def test_resume_skips_finished_work(image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(baselines._FACTORIES, "counting", _Counting)
    _Counting.calls = 0
    out = tmp_path / "out"
    first = bench.run_rd(image_dir, ["counting"], out, plots=False, progress=False)
    assert _Counting.calls == 6 and first["ran"] == 6
    again = bench.run_rd(image_dir, ["counting"], out, resume=True, plots=False, progress=False)
    assert _Counting.calls == 6 and again["ran"] == 0  # nothing re-run
    assert json.loads((out / "counting.json").read_text())["results"]["n_files"] == [3, 3]
    more = bench.run_rd(image_dir, ["counting"], out, resume=True, qualities={"counting": [1, 2, 3]}, plots=False, progress=False)
    assert _Counting.calls == 9 and more["ran"] == 3  # only the new quality point
    bench.run_rd(image_dir, ["counting"], out, resume=False, plots=False, progress=False)
    assert _Counting.calls == 15  # without --resume everything runs again


def test_run_rd_audio_layout(tmp_path):
    import soundfile as sf

    d = tmp_path / "audio"
    d.mkdir()
    for i in range(2):
        clip = sine(0.6)
        sf.write(d / f"clip{i}.wav", clip.samples.T * (0.5 + 0.3 * i), clip.sample_rate)
    out = tmp_path / "out"
    bench.run_rd(d, ["opus"], out, qualities={"opus": [24, 64]}, plots=False, progress=False)
    entry = json.loads((out / "opus.json").read_text())
    assert {"kbps", "snr", "si-sdr", "mel-distance", "encoding_time", "decoding_time"} <= set(entry["results"])
    kbps, sdr = entry["results"]["kbps"], entry["results"]["si-sdr"]
    assert kbps[0] < kbps[1] and sdr[0] < sdr[1]


def test_cli_rd_and_speed(image_dir, tmp_path):
    from click.testing import CliRunner

    from neuralcodec.apps.cli import cli

    out = tmp_path / "cli_out"
    result = CliRunner().invoke(
        cli,
        ["bench", "rd", "--data", str(image_dir), "--codecs", "jpeg", "--out", str(out), "--quality", "jpeg=20/60", "--no-plots"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["files"] == 3
    assert (out / "jpeg.json").is_file()
    result = CliRunner().invoke(cli, ["bench", "speed", "--codec", "jpeg", "--runs", "2", str(image_dir / "img0.png")])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["runs"] == 2 and last["unit"] == "MP/s" and last["encode_median"] > 0


# ------------------------------------------------------------------ neural codecs by name


def _toy_codec_class():
    import struct
    import zlib

    from neuralcodec.codecs.base import Codec
    from neuralcodec.codecs.registry import register_architecture

    @register_architecture
    class BenchToyCodec(Codec):
        """Uniform quantization to `levels` levels + zlib: a stand-in for a neural codec."""

        architecture = "bench-toy"
        modality = "image"

        def __init__(self, levels: int = 16) -> None:
            super().__init__(levels=levels)
            self.register_buffer("scale", torch.tensor([float(levels - 1)]))  # 1-D: weights_hash cannot view a 0-dim tensor

        def compress(self, x, quality=None):
            scale = float(self.scale) if quality is None else float(quality - 1)
            q = (x.clamp(0, 1) * scale).round().to(torch.uint8).cpu()
            return struct.pack("<3If", *q.shape, scale) + zlib.compress(q.numpy().tobytes(), 9)

        def decompress(self, blob):
            c, h, w, scale = struct.unpack("<3If", blob[:16])
            q = np.frombuffer(zlib.decompress(blob[16:]), np.uint8).reshape(c, h, w)
            return torch.from_numpy(q.astype(np.float32)) / scale

    @register_architecture
    class BenchToyMultiRate(BenchToyCodec):
        """One model with several rate points: the benchmark sweeps ``qualities``."""

        architecture = "bench-toy-multi"
        qualities = (4, 16, 64)

    return BenchToyCodec, BenchToyMultiRate


def test_neural_codec_family_enters_by_name(image_dir, tmp_path):
    from neuralcodec.codecs.registry import save

    cls, multi = _toy_codec_class()
    paths = [str(save(cls(levels=lv), tmp_path / "models" / f"toy{lv}")) + ".json" for lv in (4, 32)]
    out = tmp_path / "out"
    summary = bench.run_rd(
        image_dir, ["jpeg", "toy=" + "+".join(paths)], out, anchor="jpeg", qualities={"jpeg": [20, 90]}, plots=False, progress=False
    )
    assert summary["errors"] == 0
    entry = json.loads((out / "toy.json").read_text())
    res = entry["results"]
    assert res["quality"] == paths and res["n_files"] == [3, 3]
    assert res["bpp"][0] < res["bpp"][1] and res["psnr-rgb"][0] < res["psnr-rgb"][1]
    # bpp counts the blob's bytes exactly
    records = [json.loads(line) for line in (out / "toy.per_file.jsonl").read_text().splitlines()]
    assert all(r["bpp"] == pytest.approx(r["bytes"] * 8 / (40 * 48)) for r in records)


def test_neural_codec_with_several_rate_points(image_dir, tmp_path):
    from neuralcodec.codecs.registry import save

    _, multi = _toy_codec_class()
    path = str(save(multi(levels=8), tmp_path / "models" / "multi")) + ".json"
    out = tmp_path / "out"
    bench.run_rd(image_dir, [path], out, plots=False, progress=False)
    (result,) = [p for p in out.glob("*.json") if p.name != "bd_rate.json"]
    res = json.loads(result.read_text())["results"]
    assert res["quality"] == [4, 16, 64]
    assert res["bpp"] == sorted(res["bpp"]) and res["psnr-rgb"] == sorted(res["psnr-rgb"])


def test_run_rd_video_layout(tmp_path):
    import av

    if not get_baseline("x264").available:
        pytest.skip("no libx264")
    d = tmp_path / "video"
    d.mkdir()
    T, H, W = 6, 40, 48
    yy, xx = np.mgrid[0:H, 0:W]
    with av.open(str(d / "clip.mkv"), "w") as out:  # the source itself: near-lossless x264
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"qp": "0"}
        for t in range(T):
            rgb = np.stack([(xx * 5 + 7 * t) % 256, (yy * 6) % 256, (xx + yy + t) % 256], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    out_dir = tmp_path / "out"
    summary = bench.run_rd(d, ["x264"], out_dir, qualities={"x264": [40, 20]}, plots=False, progress=False)
    assert summary["modality"] == "video" and summary["errors"] == 0
    res = json.loads((out_dir / "x264.json").read_text())["results"]
    assert {"kbps", "psnr-y", "psnr-rgb", "encoding_time", "decoding_time"} <= set(res)
    assert res["kbps"][0] < res["kbps"][1] and res["psnr-y"][0] < res["psnr-y"][1]
