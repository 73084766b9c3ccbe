"""Benchmark: the WaLLoC video codec (walloc-video) on the lab's video clips, against x264 and x265.

Measured in one process, on the first ``--frames`` (64) frames of every clip in
``../shared/data/video`` (frames the model was never trained on):

* ``walloc-video``: kbps of the actual ``.ncf`` bytes (header, index, digests and CRC
  included), PSNR over RGB and over Y (BT.601 luma) of the 8-bit output against the 8-bit
  source frames, encode and decode frames per second on the CPU (``--threads``, default 1),
  and the dimensionality reduction of the latents (RGB values / latent values);
* the temporal entropy model against frame-wise intra coding of the *same* latents (GOP of 1:
  every frame coded by the image model's intra context model) and against one GOP for the
  whole clip: the reconstruction is identical, only the rate changes;
* the design measurement: zeroth-order entropy (bits per latent) of the latents, of the
  frame-to-frame differences, and of 3-level integer Haar bands over GOPs of 8;
* x264 and x265 (PyAV, preset medium, CRF, 4:2:0, one thread; ``neuralcodec.apps.baselines``)
  at the bitrate walloc-video used on each clip (CRF searched for the closest rate; rate
  from the codec packets), same metrics and speeds; and the lowest rate at which each
  reaches walloc-video's PSNR (RGB), as a rate ratio.

    python benchmarks/bench_walloc_video.py
    python benchmarks/bench_walloc_video.py --model runs/walloc-video/walloc-video.json --frames 16

The data is ``$NEURALCODEC_DATA/video`` or ``../shared/data/video``; the benchmark skips with
a message when it is absent. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from neuralcodec.apps.baselines import Video, get_baseline
from neuralcodec.codecs.registry import load
from neuralcodec.datasets.media import VIDEO_SUFFIXES, _open_video, iter_video
from _common import data_root  # benchmarks/_common.py


def first_frames(path: Path, n: int) -> tuple[torch.Tensor, Fraction]:
    container, stream = _open_video(path)
    with container:
        rate = Fraction(stream.average_rate or stream.guessed_rate)
    chunks, got = [], 0
    for chunk in iter_video(path, chunk_frames=16):
        chunks.append(chunk[:, : n - got])
        got += chunks[-1].shape[1]
        if got >= n:
            break
    return torch.cat(chunks, 1), rate


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma (Y' in [0, 255]) of ``(T, H, W, 3)`` 8-bit RGB."""
    f = frames.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def quality(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {"psnr_rgb": psnr(ref, out), "psnr_y": psnr(luma(ref), luma(out))}


def zeroth_order_bits(v: torch.Tensor) -> float:
    """Mean over channels of the empirical entropy of integer values ``(N, C, ...)``, bits per value."""
    v = v.long().transpose(0, 1).reshape(v.shape[1], -1)
    total = 0.0
    for row in v:
        _, counts = torch.unique(row, return_counts=True)
        p = counts.double() / counts.sum()
        total += float(-(p * p.log2()).sum()) * row.numel()
    return total / v.numel()


def design_measurement(q: torch.Tensor, gop: int = 8) -> dict[str, float]:
    """Zeroth-order entropies of the latents ``(C, T, h, w)``: as is, frame differences, integer Haar."""
    frames = q.transpose(0, 1)  # (T, C, h, w)
    out = {"latents": zeroth_order_bits(frames)}
    if frames.shape[0] > 1:
        out["frame_difference"] = zeroth_order_bits(frames[1:] - frames[:-1])
        lows, highs = [], []
        for g in range(0, frames.shape[0] - gop + 1, gop):
            s = frames[g:g + gop].long()
            while s.shape[0] > 1:  # integer Haar (S-transform) lifting: exactly invertible
                a, b = s[0::2], s[1::2]
                d = b - a
                s = a + torch.div(d, 2, rounding_mode="floor")
                highs.append(d)
            lows.append(s)
        if lows:
            low, high = torch.cat(lows), torch.cat(highs)
            out["haar_gop8_mean"] = (zeroth_order_bits(low) * low.numel() + zeroth_order_bits(high) * high.numel()) / (
                low.numel() + high.numel())
            n = frames[: len(lows) * gop]
            # The frame-difference scheme on the same GOPs: one intra frame per GOP, then differences.
            diffs = torch.cat([n[g + 1:g + gop] - n[g:g + gop - 1] for g in range(0, len(n), gop)])
            intra = n[0::gop]
            out["intra_plus_differences_gop8_mean"] = (
                zeroth_order_bits(intra) * intra.numel() + zeroth_order_bits(diffs) * diffs.numel()) / n.numel()
    return out


def baseline_at_rate(name: str, video: Video, target_kbps: float) -> dict:
    """Encode with a CRF baseline at the CRF whose rate is closest to ``target_kbps`` (secant search)."""
    base = get_baseline(name)
    tried: dict[int, tuple[bytes, float, float]] = {}

    def rate(crf: int) -> float:
        if crf not in tried:
            t = time.process_time()
            data = base.encode(video, crf)
            dt = time.process_time() - t
            tried[crf] = (data, base.payload_size(data) * 8 / video.seconds / 1000, dt)
        return tried[crf][1]

    lo, hi = base.quality_range
    crf = 30
    for _ in range(5):  # rate roughly halves every +6 CRF
        r = rate(crf)
        nxt = int(round(crf + 6 * math.log2(r / target_kbps)))
        nxt = min(max(nxt, lo), hi)
        if nxt == crf:
            break
        crf = nxt
    # make sure the neighbours of the best are tried (integer CRF)
    best = min(tried, key=lambda c: abs(tried[c][1] - target_kbps))
    for c in (best - 1, best + 1):
        if lo <= c <= hi:
            rate(c)
    best = min(tried, key=lambda c: (abs(tried[c][1] - target_kbps), tried[c][1]))
    data, kbps, enc_s = tried[best]
    t = time.process_time()
    decoded = base.decode(data, like=video)
    dec_s = time.process_time() - t
    frames = video.frames.shape[0]
    return {"crf": best, "kbps": kbps, **quality(video.frames, decoded.frames),
            "encode_fps": frames / enc_s, "decode_fps": frames / dec_s, "crfs_tried": sorted(tried)}


def baseline_at_quality(name: str, video: Video, target_psnr_rgb: float) -> dict:
    """The lowest rate at which a CRF baseline reaches at least ``target_psnr_rgb`` (bisection on CRF)."""
    base = get_baseline(name)
    lo, hi = base.quality_range  # a higher CRF gives a lower rate and quality
    cache: dict[int, dict] = {}

    def at(crf: int) -> dict:
        if crf not in cache:
            data = base.encode(video, crf)
            decoded = base.decode(data, like=video)
            cache[crf] = {"crf": crf, "kbps": base.payload_size(data) * 8 / video.seconds / 1000,
                          **quality(video.frames, decoded.frames)}
        return cache[crf]

    good, bad = lo, hi  # invariant: psnr(good) >= target > psnr(bad), checked below
    if at(hi)["psnr_rgb"] >= target_psnr_rgb:
        return {**at(hi), "crfs_tried": [hi]}
    if at(lo)["psnr_rgb"] < target_psnr_rgb:
        return {**at(lo), "crfs_tried": sorted(cache), "note": "target not reached"}
    while bad - good > 1:
        mid = (good + bad) // 2
        if at(mid)["psnr_rgb"] >= target_psnr_rgb:
            good = mid
        else:
            bad = mid
    return {**at(good), "crfs_tried": sorted(cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="walloc-video")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baselines", nargs="*", default=["x264", "x265"])
    parser.add_argument("--clips", nargs="*", default=None, help="file names inside the video folder (default: all)")
    parser.add_argument("--update-card", default=None, help="write the results into this model card (.json)")
    args = parser.parse_args()
    folder = data_root() / "video"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if folder.is_dir() else []
    if args.clips:
        files = [p for p in files if p.name in args.clips]
    if not files:
        print(f"SKIP: no video clips in {folder} (set NEURALCODEC_DATA)")
        print(json.dumps({"skipped": f"no video clips in {folder}"}))
        return
    torch.set_num_threads(args.threads)
    model = load(args.model)
    print(f"model {model.name} (weights {model.weights_hash()}), gop {model.gop}, {args.threads} thread(s), "
          f"first {args.frames} frames of each clip")
    rows = []
    for path in files:
        x, fps = first_frames(path, args.frames)
        _, t, h, w = x.shape
        seconds = t / float(fps)
        src = np.rint(x.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)  # (T, H, W, 3)
        with torch.inference_mode():
            t0 = time.process_time()
            blob = model.compress(x, fps=fps)
            enc_s = time.process_time() - t0
            t0 = time.process_time()
            y = model.decompress(blob)
            dec_s = time.process_time() - t0
            q = model.latents(blob)
            exact = bool(torch.equal(q, model.quantized_latents(x)))
            rates = {}
            for gop in sorted({1, model.gop, t}):
                b = blob if gop == model.gop else model.compress(x, fps=fps, gop=gop)
                rates[f"gop{gop}"] = len(b) * 8 / seconds / 1000
        out = np.rint(y.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)
        ours = {"kbps": len(blob) * 8 / seconds / 1000, "bytes": len(blob), **quality(src, out),
                "encode_fps": t / enc_s, "decode_fps": t / dec_s,
                "bits_per_latent": len(blob) * 8 / q.numel(),
                "latent_shape": list(q.shape), "dimensionality_reduction": x.numel() / q.numel(),
                "latents_exact": exact, "kbps_by_gop": rates,
                "intra_only_over_temporal_rate": rates["gop1"] / rates[f"gop{model.gop}"]}
        row = {"clip": path.name, "frames": t, "size": [w, h], "fps": f"{fps.numerator}/{fps.denominator}",
               "walloc_video": ours, "design_zeroth_order_bits_per_latent": design_measurement(q)}
        print(f"{path.name}: {t} frames {w}x{h} @ {float(fps):.3g} fps")
        print(f"  walloc-video  {ours['kbps']:8.1f} kbps  PSNR RGB {ours['psnr_rgb']:.2f} dB  Y {ours['psnr_y']:.2f} dB"
              f"  enc {ours['encode_fps']:.2f} fps  dec {ours['decode_fps']:.2f} fps  latents {tuple(q.shape)}"
              f" ({ours['dimensionality_reduction']:.1f}x fewer values)")
        print("  rate by GOP (same reconstruction): " + ", ".join(f"{k} {v:.1f} kbps" for k, v in rates.items())
              + f"; intra-only / temporal = {ours['intra_only_over_temporal_rate']:.2f}x")
        print("  zeroth-order bits/latent: " + ", ".join(f"{k} {v:.3f}" for k, v in row["design_zeroth_order_bits_per_latent"].items()))
        video = Video(src, float(fps)) if h % 2 == 0 and w % 2 == 0 else None
        for name in args.baselines:
            if video is None or not get_baseline(name).available:
                row[name] = None
                print(f"  {name}: skipped ({'odd size' if video is None else get_baseline(name).unavailable_reason()})")
                continue
            r = baseline_at_rate(name, video, ours["kbps"])
            row[name] = r
            print(f"  {name:12s}  {r['kbps']:8.1f} kbps  PSNR RGB {r['psnr_rgb']:.2f} dB  Y {r['psnr_y']:.2f} dB"
                  f"  enc {r['encode_fps']:.2f} fps  dec {r['decode_fps']:.2f} fps  (crf {r['crf']})")
            same_q = baseline_at_quality(name, video, ours["psnr_rgb"])
            r["at_equal_psnr_rgb"] = same_q
            r["rate_ratio_at_equal_psnr_rgb"] = same_q["kbps"] / ours["kbps"]
            print(f"    {name} reaches PSNR RGB {same_q['psnr_rgb']:.2f} dB (>= ours) at {same_q['kbps']:.1f} kbps "
                  f"(crf {same_q['crf']}): {r['rate_ratio_at_equal_psnr_rgb']:.3f}x the rate of walloc-video")
            print(f"    walloc-video vs {name}: {ours['psnr_rgb'] - r['psnr_rgb']:+.2f} dB RGB, "
                  f"{ours['psnr_y'] - r['psnr_y']:+.2f} dB Y at {ours['kbps'] / r['kbps']:.2f}x its rate; "
                  f"encode {ours['encode_fps'] / r['encode_fps']:.3f}x, decode {ours['decode_fps'] / r['decode_fps']:.4f}x its speed")
        rows.append(row)
        sys.stdout.flush()
    summary = {
        "mean_kbps": float(np.mean([r["walloc_video"]["kbps"] for r in rows])),
        "mean_psnr_rgb": float(np.mean([r["walloc_video"]["psnr_rgb"] for r in rows])),
        "mean_psnr_y": float(np.mean([r["walloc_video"]["psnr_y"] for r in rows])),
        "mean_intra_only_over_temporal_rate": float(np.mean([r["walloc_video"]["intra_only_over_temporal_rate"] for r in rows])),
    }
    for name in args.baselines:
        done = [r for r in rows if r.get(name)]
        if done:
            summary[f"psnr_rgb_gain_vs_{name}_db"] = float(np.mean([r["walloc_video"]["psnr_rgb"] - r[name]["psnr_rgb"] for r in done]))
            summary[f"psnr_y_gain_vs_{name}_db"] = float(np.mean([r["walloc_video"]["psnr_y"] - r[name]["psnr_y"] for r in done]))
            summary[f"{name}_rate_over_ours_at_equal_psnr_rgb"] = float(np.mean([r[name]["rate_ratio_at_equal_psnr_rgb"] for r in done]))
    result = {"benchmark": "bench_walloc_video", "model": model.name, "weights_hash": model.weights_hash(),
              "threads": args.threads, "frames_per_clip": args.frames, "device": "cpu",
              "speed_clock": "process CPU time (time.process_time)", "summary": summary, "clips": rows}
    if args.update_card:
        card_path = Path(args.update_card)
        card = json.loads(card_path.read_text())
        if card.get("weights_hash") != model.weights_hash():
            raise SystemExit(f"{card_path} describes weights {card.get('weights_hash')}, not {model.weights_hash()}")
        card["results"] = {"command": "python " + " ".join(sys.argv), **result}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
