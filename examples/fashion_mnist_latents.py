"""Train a Fashion-MNIST classifier directly on WaLLoC latents, streamed from tar shards.

    apt-get install -y dataset-fashion-mnist        # 70,000 labelled 28x28 images
    python examples/fashion_mnist_latents.py --out fmnist-shards --train 10000 --test 2000

Step 1 packs the images (upsampled 2x to 56x56, so the 16x codec gives 12x7x7 latents)
into ``fmnist-shards/{train,test}/shard-*.tar`` (resumable: run it again after an
interruption). Step 2 streams entropy-decoded latents (no synthesis network) through a
``DataLoader`` with two workers and trains a small CNN on them.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from neuralcodec.datasets import LatentDataset, pack

FASHION = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def items(split: str, n: int):
    """(56x56 image tensor, label) pairs: the iterable that pack() encodes."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")[:n]
    labels = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")[:n]
    for image, label in zip(images, labels):
        x = torch.from_numpy(image.copy()).float().div(255)[None, None]
        yield F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)[0], int(label)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fmnist-shards")
    ap.add_argument("--model", default="walloc-image-16x")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)

    # 1. Encode once (a progress bar on a terminal; resumes after an interruption).
    for split, n in (("train", args.train), ("test", args.test)):
        pack(items(split, n), out / split, model=args.model, shard_size=2000)

    # 2. Train on latents. Per-channel standardisation from one batch of the training set.
    train = LatentDataset(out / "train", model=args.model, batch_size=128, shuffle=True, seed=0)
    first = next(iter(train))["latent"].float()
    mean, std = first.mean((0, 2, 3), keepdim=True), first.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    channels = first.shape[1]
    model = nn.Sequential(
        nn.Conv2d(channels, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.Flatten(), nn.LazyLinear(10),
    )
    model(first[:1])  # materialise the lazy layer
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        for batch in DataLoader(train, batch_size=None, num_workers=2):
            loss = F.cross_entropy(model((batch["latent"].float() - mean) / std), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in LatentDataset(out / "test", model=args.model, batch_size=500):
                pred = model((batch["latent"].float() - mean) / std).argmax(1)
                correct += int((pred == batch["label"]).sum())
                total += len(pred)
        print(f"epoch {epoch}: loss {loss.item():.3f}, test accuracy {correct / total:.4f}")


if __name__ == "__main__":
    main()
