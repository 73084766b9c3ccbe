"""Audio loader throughput: walloc-audio latents from shards vs reading the WAV files.

Renders ``--per-digit`` x 10 one-second spoken digits with espeak-ng (22.05 kHz mono, see
:mod:`neuralcodec.datasets.spoken_digits`), packs them with ``walloc-audio`` and times, on one
thread:

* ``LatentDataset`` (batched entropy decoding across files, the exact integer context model);
* one ``codec.latents`` call per file (the path the loader took before batching);
* the same per-file and batched paths with the float context model built from the same
  tensors (``entropy_model="hierarchical"``, the shipped model before the switch);
* soundfile reading the WAV files to tensors (the peer).

Batched latents are checked to equal the per-file ones. Skips cleanly without espeak-ng.

    python benchmarks/bench_latent_loader_audio.py [--per-digit 10] [--batch 64]

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch


def blobs_of(shards: Path) -> list[bytes]:
    out = []
    for t in sorted(shards.glob("*.tar")):
        with tarfile.open(t) as tf:
            out += [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".ncf")]
    return out


def float_model():
    """walloc-audio's tensors in the float ``HierarchicalContextModel`` (the pre-switch model)."""
    from safetensors.torch import load_file

    from neuralcodec.codecs import registry

    card = registry.read_card("walloc-audio")
    cfg = {k: v for k, v in card["config"].items() if k not in ("entropy_model", "entropy_config")}
    codec = registry.build(card["architecture"], cfg)
    codec.load_state_dict(load_file(str(registry.WEIGHTS_DIR / "walloc-audio.safetensors")))
    codec.name = "walloc-audio"
    return codec.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-digit", type=int, default=10, help="training clips per digit to render")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import neuralcodec
    from neuralcodec.datasets import LatentDataset, pack
    from neuralcodec.datasets.spoken_digits import espeak_available, make_spoken_digits

    if not espeak_available():
        print("skip: espeak-ng is not installed (apt-get install espeak-ng)")
        print(json.dumps({"skipped": "espeak-ng missing"}))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_loader_audio_"))
    make_spoken_digits(work / "digits", train_per_digit=args.per_digit, test_per_digit=1)
    wavs = sorted((work / "digits" / "train").rglob("*.wav"))
    res: dict = {"clips": len(wavs), "batch": args.batch, "threads": 1}

    t0 = time.perf_counter()
    for w in wavs:
        x, sr = sf.read(str(w), dtype="float32", always_2d=True)
        torch.from_numpy(x.T.copy())
    res["wav_read_clips_per_s"] = len(wavs) / (time.perf_counter() - t0)
    print(f"{len(wavs)} clips, {sr} Hz, {x.shape[0]} frames, {x.shape[1]} channel(s)")

    for name, codec in (("float", float_model()), ("exact", neuralcodec.load("walloc-audio"))):
        shards = work / f"shards-{name}"
        pack(wavs, shards, model=codec, shard_size=1000, progress=False)
        blobs = blobs_of(shards)
        n = min(len(blobs), 32)
        t0 = time.perf_counter()
        ref = [codec.latents(b) for b in blobs[:n]]
        res[f"{name}_per_item_clips_per_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = [z for b in LatentDataset(shards, model=codec, batch_size=args.batch)
               for z in (b["latent"] if isinstance(b["latent"], list) else b["latent"].unbind(0))]
        res[f"{name}_latent_dataset_clips_per_s"] = len(got) / (time.perf_counter() - t0)
        if not all(torch.equal(a, b) for a, b in zip(got[:n], ref)):
            sys.exit(f"{name}: batched latents differ from per-item latents")
        res[f"{name}_kbps"] = sum(map(len, blobs)) * 8 / len(blobs) / (x.shape[0] / sr) / 1000
        print(name, {k: round(v, 2) for k, v in res.items() if k.startswith(name)})
    res["exact_dataset_vs_float_per_item"] = res["exact_latent_dataset_clips_per_s"] / res["float_per_item_clips_per_s"]
    res["exact_dataset_vs_wav_read"] = res["exact_latent_dataset_clips_per_s"] / res["wav_read_clips_per_s"]
    print(f"LatentDataset (exact, batched): {res['exact_latent_dataset_clips_per_s']:.1f} clips/s = "
          f"{res['exact_dataset_vs_float_per_item']:.1f}x the per-item float path, "
          f"{res['exact_dataset_vs_wav_read']:.4f}x reading WAV")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
