"""Loader throughput: entropy-decoded latents from shards vs Pillow decoding PNG / JPEG files.

The images of ``../shared/data/images/eval24`` (24 photos, 768x512) are packed with
:func:`neuralcodec.datasets.pack` (WaLLoC, default ``walloc-image-16x``) and also written as
JPEG (quality 90). One pass over all images is timed for:

* ``LatentDataset`` (batched entropy decoding, no synthesis network) -> latents/s;
* the same blobs with one ``codec.latents`` call per item;
* Pillow decoding the PNG files, and the JPEG files, to float tensors -> images/s.

Each figure is the best of ``--repeats`` passes. Skips cleanly when the corpus or the model
is absent.

    python benchmarks/bench_latent_loader.py [--model walloc-image-16x] [--device cuda]

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import data_root, load_codec_or_skip  # benchmarks/_common.py

DATA = data_root()


def pillow_pass(paths: list[Path]) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            a = np.array(im.convert("RGB"), dtype=np.uint8)
        torch.from_numpy(a).permute(2, 0, 1).float().div(255)
    return len(paths) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-image-16x")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=24, help="images of eval24 to use")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA / "images" / "eval24"
    pngs = sorted(folder.glob("*.png"))[: args.limit]
    if not pngs:
        print(f"SKIP: no images in {folder} (set NEURALCODEC_DATA)")
        print(json.dumps({"skipped": "corpus absent"}))
        return 0
    from neuralcodec.datasets import LatentDataset, pack
    codec = load_codec_or_skip(args.model, args.device)
    if codec is None:
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        from PIL import Image

        jpgs = []
        for p in pngs:
            q = work / "jpg" / (p.stem + ".jpg")
            q.parent.mkdir(exist_ok=True)
            with Image.open(p) as im:
                im.convert("RGB").save(q, quality=90)
            jpgs.append(q)
        t0 = time.perf_counter()
        pack(pngs, work / "shards", model=codec, shard_size=8, batch_size=1, progress=False)
        pack_rate = len(pngs) / (time.perf_counter() - t0)
        latent_rates, per_item_rates, png_rates, jpg_rates, first = [], [], [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ds = LatentDataset(work / "shards", model=codec, batch_size=args.batch, device=args.device)
            n = 0
            for b in ds:
                if n == 0:
                    first.append(time.perf_counter() - t0)
                n += len(b["index"])
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            latent_rates.append(n / (time.perf_counter() - t0))
            blobs = [ds.blob(i) for i in range(ds.num_items)]
            t0 = time.perf_counter()
            for blob in blobs:
                codec.latents(blob)
            per_item_rates.append(len(blobs) / (time.perf_counter() - t0))
            png_rates.append(pillow_pass(pngs))
            jpg_rates.append(pillow_pass(jpgs))
        sizes = {
            "shards": sum(p.stat().st_size for p in (work / "shards").glob("*.tar")),
            "png": sum(p.stat().st_size for p in pngs),
            "jpeg90": sum(p.stat().st_size for p in jpgs),
        }
        latent_shape = list(next(iter(LatentDataset(work / "shards", model=codec, batch_size=1)))["latent"].shape[1:])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {"latents_batched": max(latent_rates), "latents_per_item": max(per_item_rates),
            "png_pillow": max(png_rates), "jpeg90_pillow": max(jpg_rates)}
    print(f"{len(pngs)} images of eval24, model {codec.name}, device {args.device}, {args.threads} thread(s); "
          f"latent {latent_shape}; pack {pack_rate:.2f} images/s")
    for k, v in best.items():
        print(f"  {k:>17}: {v:8.2f} items/s")
    print(f"  latents (batched) / PNG = {best['latents_batched'] / best['png_pillow']:.2f}x, "
          f"/ JPEG = {best['latents_batched'] / best['jpeg90_pillow']:.2f}x; batched / per item = "
          f"{best['latents_batched'] / best['latents_per_item']:.2f}x; time to first batch {min(first):.2f} s")
    print(f"  bytes: shards {sizes['shards']:,}, PNG {sizes['png']:,}, JPEG q90 {sizes['jpeg90']:,}")
    print(json.dumps({
        "benchmark": "latent_loader", "model": codec.name, "device": args.device, "threads": args.threads,
        "images": len(pngs), "latent_shape": latent_shape, "items_per_s": best, "pack_images_per_s": pack_rate,
        "first_batch_s": min(first), "bytes": sizes,
        "ratios": {"latents_over_png": best["latents_batched"] / best["png_pillow"],
                   "latents_over_jpeg": best["latents_batched"] / best["jpeg90_pillow"],
                   "batched_over_per_item": best["latents_batched"] / best["latents_per_item"]},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
