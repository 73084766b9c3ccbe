"""Benchmark: the WaLLoC audio codec (walloc-audio) on the audio eval clips, against Opus and MP3.

Measured in one process, on ``../shared/data/audio/eval`` (8 clips, 20 s, 44.1 kHz stereo):

* ``walloc-audio``: kbps of the actual ``.ncf`` bytes (header, gains, index and CRC
  included), SNR, SI-SDR and log-mel distance (:mod:`neuralcodec.apps.metrics`), encode and
  decode real-time factor on the CPU (audio seconds per wall second; ``--threads``);
* Opus (libopus, VBR) and MP3 (LAME, CBR) via PyAV at the bitrate walloc-audio used on each
  clip, rate from their packet bytes (:mod:`neuralcodec.apps.baselines`), same metrics;
* chunking: the first clip coded in chunks (the model's setting) and as one chunk (the same
  weights with a chunk longer than the clip): SNR of both and SNR on the crossfade regions;
* streaming: a 10-minute stereo signal (the eval clips, repeated) generated block by block,
  encoded with ``compress_stream`` and decoded with ``decompress_stream`` in a fresh
  subprocess; its peak RSS growth against the size of the whole signal in float32
  (``--no-long`` skips it).

    python benchmarks/bench_walloc_audio.py
    python benchmarks/bench_walloc_audio.py --model runs/walloc-audio/walloc-audio.json --clips 2

The eval set is ``$NEURALCODEC_DATA/audio/eval`` or ``../shared/data/audio/eval``; the benchmark
skips with a message when it is absent. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from neuralcodec.apps.baselines import Audio, get_baseline
from neuralcodec.apps.metrics import mel_distance, si_sdr, snr
from neuralcodec.codecs.registry import load
from neuralcodec.datasets.media import read_audio
from _common import data_root  # benchmarks/_common.py


def _metrics(ref: np.ndarray, est: np.ndarray, rate: int) -> dict[str, float]:
    return {"snr_db": snr(ref, est), "si_sdr_db": si_sdr(ref, est), "mel_distance": mel_distance(ref, est, rate)}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def long_stream(model_name: str, minutes: float, threads: int) -> dict:
    """Encode + decode ``minutes`` of stereo audio block by block; peak RSS growth (run in a subprocess)."""
    torch.set_num_threads(threads)
    model = load(model_name)
    rate = model.sample_rate
    clips = sorted((data_root() / "audio" / "eval").glob("*.flac"))
    base = [read_audio(p)[0] for p in clips[:2]]
    frames = int(minutes * 60 * rate)
    block = rate  # one second per block

    def blocks():
        pos = 0
        while pos < frames:
            n = min(block, frames - pos)
            src = base[(pos // (20 * rate)) % len(base)]
            start = pos % (src.shape[1] - block)
            yield src[:, start:start + n].clone()
            pos += n

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    blob = model.compress_stream(blocks(), rate)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    decoded = 0
    for piece in model.decompress_stream(blob):
        decoded += piece.shape[1]
    t_dec = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = frames / rate
    return {"minutes": minutes, "frames": frames, "decoded_frames": decoded, "kbps": len(blob) * 8 / seconds / 1000,
            "encode_rtf": seconds / t_enc, "decode_rtf": seconds / t_dec,
            "peak_rss_growth_mb": (rss1 - rss0) / 2**20, "whole_signal_float32_mb": 2 * frames * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-audio", help="shipped name or a saved model's .json")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--no-long", action="store_true")
    ap.add_argument("--long-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.long_only:
        print(json.dumps(long_stream(args.model, args.long_minutes, args.threads)))
        return
    folder = data_root() / "audio" / "eval"
    clips = sorted(folder.glob("*.flac"))[: args.clips]
    if not clips:
        print(f"skipped: no eval clips in {folder} (set NEURALCODEC_DATA)")
        print(json.dumps({"skipped": True, "reason": f"no eval clips in {folder}"}))
        return
    model = load(args.model)
    opus, mp3 = get_baseline("opus"), get_baseline("mp3")
    rows = []
    for path in clips:
        x, rate = read_audio(path)
        seconds = x.shape[1] / rate
        model.compress(x[:, :rate], metadata={"sample_rate": rate})  # warm-up (table preparation)
        t = time.perf_counter()
        blob = model.compress(x, metadata={"sample_rate": rate})
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        y = model.decompress(blob)
        t_dec = time.perf_counter() - t
        ref = x.numpy()
        kbps = len(blob) * 8 / seconds / 1000
        row = {"clip": path.name, "seconds": seconds, "kbps": kbps, **_metrics(ref, y.numpy(), rate),
               "encode_rtf": seconds / t_enc, "decode_rtf": seconds / t_dec}
        audio = Audio(ref, rate)
        for name, base in (("opus", opus), ("mp3", mp3)):
            lo, hi = base.quality_range
            data = base.encode(audio, float(min(max(kbps, lo), hi)))
            out = base.decode(data, like=audio).samples
            m = _metrics(ref, out, rate)
            row[name] = {"kbps": base.payload_size(data) * 8 / seconds / 1000, **m}
        rows.append(row)
        print(f"{path.name}: walloc-audio {kbps:.1f} kbps SNR {row['snr_db']:.2f} SI-SDR {row['si_sdr_db']:.2f} "
              f"mel {row['mel_distance']:.3f} | opus {row['opus']['kbps']:.1f} kbps SI-SDR {row['opus']['si_sdr_db']:.2f} "
              f"| mp3 {row['mp3']['kbps']:.1f} kbps SI-SDR {row['mp3']['si_sdr_db']:.2f} "
              f"| enc {row['encode_rtf']:.1f}x dec {row['decode_rtf']:.1f}x real time")

    summary = {"walloc-audio": {k: _mean(rows, k) for k in ("kbps", "snr_db", "si_sdr_db", "mel_distance",
                                                              "encode_rtf", "decode_rtf")}}
    for name in ("opus", "mp3"):
        summary[name] = {k: float(np.mean([r[name][k] for r in rows])) for k in ("kbps", "snr_db", "si_sdr_db",
                                                                                 "mel_distance")}
    summary["si_sdr_gain_over_opus_db"] = summary["walloc-audio"]["si_sdr_db"] - summary["opus"]["si_sdr_db"]
    summary["si_sdr_gain_over_mp3_db"] = summary["walloc-audio"]["si_sdr_db"] - summary["mp3"]["si_sdr_db"]

    # Chunking: the same weights coding the first clip as one chunk.
    x, rate = read_audio(clips[0])
    chunked = model.decompress(model.compress(x, metadata={"sample_rate": rate}))
    whole_model = type(model)(**{**model.config, "chunk": -(-(x.shape[1] + 4 * model.multiple) // model.multiple)
                                 * model.multiple + 2 * model.overlap})
    whole_model.load_state_dict(model.state_dict())
    whole_model.name = model.name
    whole_model.eval()
    whole = whole_model.decompress(whole_model.compress(x, metadata={"sample_rate": rate}))
    plan = model._plan(x.shape[1])
    seams = np.zeros(x.shape[1], dtype=bool)
    for s, _ in plan[1:]:
        a = s + model.margin - model.multiple
        seams[max(a, 0):a + model.crossfade] = True
    chunk_info = {"clip": clips[0].name, "chunks": len(plan), "chunk_frames": model.chunk, "overlap_frames": model.overlap,
                  "snr_chunked_db": snr(x.numpy(), chunked.numpy()), "snr_one_chunk_db": snr(x.numpy(), whole.numpy()),
                  "snr_on_crossfades_db": snr(x.numpy()[:, seams], chunked.numpy()[:, seams]) if seams.any() else None,
                  "max_abs_difference_chunked_vs_one_chunk": float((chunked - whole).abs().max())}
    print(f"chunking ({chunk_info['chunks']} chunks): SNR chunked {chunk_info['snr_chunked_db']:.2f} dB, "
          f"one chunk {chunk_info['snr_one_chunk_db']:.2f} dB, on the crossfades {chunk_info['snr_on_crossfades_db']}")

    long_info = None
    if not args.no_long:
        cmd = [sys.executable, __file__, "--long-only", "--model", args.model, "--threads", str(args.threads),
               "--long-minutes", str(args.long_minutes)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"long-stream run failed: {res.stderr[-2000:]}")
        long_info = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"streaming {long_info['minutes']:.0f} min: peak RSS growth {long_info['peak_rss_growth_mb']:.0f} MB "
              f"(whole signal in float32: {long_info['whole_signal_float32_mb']:.0f} MB), encode "
              f"{long_info['encode_rtf']:.1f}x, decode {long_info['decode_rtf']:.1f}x real time, "
              f"{long_info['kbps']:.1f} kbps")

    w, o, m3 = summary["walloc-audio"], summary["opus"], summary["mp3"]
    print(f"mean over {len(rows)} clips: walloc-audio {w['kbps']:.1f} kbps SNR {w['snr_db']:.2f} SI-SDR "
          f"{w['si_sdr_db']:.2f} mel {w['mel_distance']:.3f}; opus {o['kbps']:.1f} kbps SI-SDR {o['si_sdr_db']:.2f} "
          f"mel {o['mel_distance']:.3f}; mp3 {m3['kbps']:.1f} kbps SI-SDR {m3['si_sdr_db']:.2f} mel "
          f"{m3['mel_distance']:.3f}; encode {w['encode_rtf']:.1f}x, decode {w['decode_rtf']:.1f}x real time "
          f"({args.threads} threads)")
    result = {"model": args.model, "weights_hash": model.weights_hash(), "threads": args.threads,
              "clips": len(rows), "summary": summary, "chunking": chunk_info, "long_stream": long_info,
              "per_clip": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
