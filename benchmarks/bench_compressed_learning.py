"""Compressed-domain learning on Fashion-MNIST: a classifier on WaLLoC latents vs on pixels.

What it does (CPU unless --device cuda):

1. Takes a subset of Fashion-MNIST (Debian package ``dataset-fashion-mnist``; the script
   skips with a message when it is absent), writes it as PNG and JPEG (q=90) files, and packs
   it with :func:`neuralcodec.datasets.pack` into tar shards of ``.ncf`` files. The 28x28
   images are upsampled 2x (bilinear) to 56x56 before encoding: with the 16x model (J=3) a
   28x28 image (padded to 32) would give 4x4 latents, too coarse to keep the garments'
   shape; 56x56 gives 12x7x7 = 588 latent values per image (784 pixels in the original).
2. Loader throughput, one pass over the training subset: latents/s from the shards with
   :class:`~neuralcodec.datasets.LatentDataset` (batched entropy decoding, no synthesis),
   the same with one ``codec.latents`` call per item, and images/s decoding the PNG and the
   JPEG files with Pillow; time to first batch of each.
3. Training: the same classifier trunk (3x3 convs at 7x7, then a linear layer) behind a
   latent stem (one 3x3 conv, 12 -> 64 channels) or a pixel stem (two stride-2 convs,
   1 -> 32 -> 64 channels, 28 -> 7), trained with the same budget (epochs, batch size,
   optimizer, learning rate, seed) on data held in memory (decoded once by the loaders
   above); reports test accuracy and training throughput (samples/s).

Bytes on disk: the shards, the PNG and the JPEG folders, and the raw 8-bit pixels.

    python benchmarks/bench_compressed_learning.py --train 10000 --test 2000 --epochs 4

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import LabeledFiles, folder_bytes, load_codec_or_skip, time_files, time_latents, train_and_test  # benchmarks/_common.py

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:n_train]
    ytr = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:n_train]
    xte = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:n_test]
    yte = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:n_test]
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


def upsampled(images: np.ndarray, scale: int) -> list[torch.Tensor]:
    x = torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)
    if scale != 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False).clamp(0, 1)
    return list(x)


def write_files(images: np.ndarray, folder: Path, fmt: str) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"{i:06d}.{fmt}"
        Image.fromarray(im).save(p, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(p)
    return paths


class PillowImages(LabeledFiles):
    """Decodes image files with Pillow to (1, H, W) float tensors, as a pixel pipeline would."""

    def load(self, path: Path) -> torch.Tensor:
        from PIL import Image

        with Image.open(path) as im:
            a = np.array(im.convert("L"), dtype=np.uint8)
        return torch.from_numpy(a).float().div(255).unsqueeze(0)


def time_latents_per_item(path: Path, codec, limit: int) -> float:
    from neuralcodec.datasets import LatentDataset

    ds = LatentDataset(path, model=codec, batch_size=1)
    n = min(limit, ds.num_items)
    t0 = time.perf_counter()
    for i in range(n):
        codec.latents(ds.blob(i))
    return n / (time.perf_counter() - t0)


class Classifier(nn.Module):
    """A stem to 64 channels at 7x7, then the shared trunk: two 3x3 convs and a linear layer."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.trunk = nn.Sequential(
            nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(x))


def latent_classifier(channels: int) -> Classifier:
    return Classifier(nn.Conv2d(channels, 64, 3, padding=1))


def pixel_classifier() -> Classifier:
    return Classifier(nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, stride=2, padding=1)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-image-16x", help="codec name or saved model path")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--scale", type=int, default=2, help="upsampling before encoding (28 -> 28*scale)")
    ap.add_argument("--loader-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=None, help="keep shards and image files here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        print(f"SKIP: Fashion-MNIST not found in {FASHION} (apt-get install -y dataset-fashion-mnist)")
        print(json.dumps({"skipped": "dataset-fashion-mnist not installed"}))
        return 0
    from neuralcodec.datasets import pack
    codec = load_codec_or_skip(args.model, args.device)
    if codec is None:
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cdl_"))
    try:
        xtr, ytr, xte, yte = load_fashion(args.train, args.test)
        print(f"Fashion-MNIST subset: {len(xtr)} train, {len(xte)} test; model {codec.name} ({args.threads} thread(s), {args.device})")

        # -- files on disk --------------------------------------------------------------
        png_tr = write_files(xtr, work / "png" / "train", "png")
        png_te = write_files(xte, work / "png" / "test", "png")
        jpg_tr = write_files(xtr, work / "jpg" / "train", "jpg")
        t0 = time.perf_counter()
        pack([(x, int(y)) for x, y in zip(upsampled(xtr, args.scale), ytr)], work / "shards" / "train", model=codec,
             shard_size=2000, resume=True)
        pack_seconds = time.perf_counter() - t0
        pack([(x, int(y)) for x, y in zip(upsampled(xte, args.scale), yte)], work / "shards" / "test", model=codec,
             shard_size=2000, resume=True)
        sizes = {
            "shards_train": folder_bytes(work / "shards" / "train"),
            "png_train": folder_bytes(work / "png" / "train"),
            "jpeg90_train": folder_bytes(work / "jpg" / "train"),
            "raw_uint8_train": int(xtr.size),
        }
        ncf_payload = 0
        from neuralcodec.datasets import LatentDataset

        ds_sizes = LatentDataset(work / "shards" / "train", model=codec)
        ncf_payload = int(ds_sizes._size.sum())
        sizes["ncf_payload_train"] = ncf_payload
        print(f"pack: {len(xtr) / pack_seconds:.0f} images/s ({args.scale * 28}x{args.scale * 28})")
        for k, v in sizes.items():
            print(f"bytes on disk {k:>18}: {v:>10,d}  ({v / len(xtr):.0f} B/image)")

        # -- loader throughput --------------------------------------------------------------
        lat_tr, lab_tr, lat_rate, lat_first = time_latents(work / "shards" / "train", codec, args.loader_batch, args.device)
        per_item_rate = time_latents_per_item(work / "shards" / "train", codec, 300)
        pix_tr, pix_lab_tr, png_rate, png_first = time_files(PillowImages(png_tr, ytr), args.loader_batch)
        _, _, jpg_rate, jpg_first = time_files(PillowImages(jpg_tr, ytr), args.loader_batch)
        lat_te, lab_te, _, _ = time_latents(work / "shards" / "test", codec, args.loader_batch, args.device)
        pix_te, pix_lab_te, _, _ = time_files(PillowImages(png_te, yte), args.loader_batch)
        assert torch.equal(lab_tr, torch.from_numpy(ytr)) and torch.equal(pix_lab_tr, torch.from_numpy(ytr))
        print(f"loader: latents from shards {lat_rate:.0f}/s (batched decode, first batch {lat_first:.2f} s); "
              f"codec.latents per item {per_item_rate:.0f}/s")
        print(f"loader: Pillow PNG {png_rate:.0f}/s (first batch {png_first:.3f} s), JPEG {jpg_rate:.0f}/s "
              f"(first batch {jpg_first:.3f} s); latents/PNG = {lat_rate / png_rate:.2f}x")

        # -- training with the same budget ---------------------------------------------------
        lat_tr, lat_te = lat_tr.float().cpu(), lat_te.float().cpu()
        mean = lat_tr.mean((0, 2, 3), keepdim=True)
        std = lat_tr.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
        lat_tr, lat_te = (lat_tr - mean) / std, (lat_te - mean) / std
        torch.manual_seed(0)
        lat_model = latent_classifier(lat_tr.shape[1])
        torch.manual_seed(0)
        pix_model = pixel_classifier()
        lat_acc, lat_sps = train_and_test(lat_model, lat_tr, lab_tr, lat_te, lab_te, args.epochs, args.batch, args.lr, 0)
        pix_acc, pix_sps = train_and_test(pix_model, (pix_tr - 0.5) / 0.5, pix_lab_tr, (pix_te - 0.5) / 0.5, pix_lab_te,
                                          args.epochs, args.batch, args.lr, 0)
        n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        print(f"train ({args.epochs} epochs, batch {args.batch}): latents {lat_acc:.4f} acc, {lat_sps:.0f} samples/s "
              f"({n_params(lat_model):,} params, input {tuple(lat_tr.shape[1:])}); pixels {pix_acc:.4f} acc, "
              f"{pix_sps:.0f} samples/s ({n_params(pix_model):,} params, input {tuple(pix_tr.shape[1:])}); "
              f"throughput latents/pixels = {lat_sps / pix_sps:.2f}x")
        result = {
            "benchmark": "compressed_learning_fashion_mnist",
            "model": codec.name, "device": args.device, "threads": args.threads,
            "train_items": len(xtr), "test_items": len(xte), "epochs": args.epochs, "batch": args.batch,
            "encode_resolution": 28 * args.scale, "latent_shape": list(lat_tr.shape[1:]),
            "pack_images_per_s": len(xtr) / pack_seconds,
            "bytes": sizes,
            "loader_latents_per_s": lat_rate, "loader_latents_per_item_decode_per_s": per_item_rate,
            "loader_png_pillow_per_s": png_rate, "loader_jpeg_pillow_per_s": jpg_rate,
            "first_batch_s": {"latents": lat_first, "png": png_first, "jpeg": jpg_first},
            "accuracy": {"latents": lat_acc, "pixels": pix_acc},
            "train_samples_per_s": {"latents": lat_sps, "pixels": pix_sps},
            "params": {"latents": n_params(lat_model), "pixels": n_params(pix_model)},
            "ratios": {"loader_latents_over_png": lat_rate / png_rate, "train_latents_over_pixels": lat_sps / pix_sps,
                       "batched_over_per_item_decode": lat_rate / per_item_rate,
                       "shards_over_png_bytes": sizes["shards_train"] / sizes["png_train"]},
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
