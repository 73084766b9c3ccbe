"""Train a spoken-digit classifier directly on WaLLoC-audio latents, streamed from tar shards.

    apt-get install -y espeak-ng
    nice python examples/spoken_digits_latents.py --out digits --train-per-digit 120 --test-per-digit 40

Step 1 renders the ten words with espeak-ng (many voices, pitches, speeds; 1 s mono clips
at 22,050 Hz in class folders ``digits/clips/{train,test}/<digit>-<word>/``; the test split
is spoken by voice variants never heard in training). Step 2 packs each split with
``walloc-audio`` into ``digits/shards/{train,test}/shard-*.tar`` (the codec resamples to
44.1 kHz; both steps resume after an interruption). Step 3 reads entropy-decoded latents
(108 channels x 347 frames per clip, no synthesis network) from the shards through a
``DataLoader`` with two workers, once, and trains a small 1D CNN on their magnitude envelope
``log(1 + |latent|)`` in memory, reporting test accuracy on the unseen voices.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from neuralcodec.datasets import LatentDataset, pack
from neuralcodec.datasets.spoken_digits import make_spoken_digits


def classifier(channels: int, classes: int = 10) -> nn.Module:
    """Conv stem at the latent rate, four stride-2 convs, mean+max pooling over time, linear."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv1d(channels, 64, 3, padding=1)]
            for _ in range(4):
                layers += [nn.GELU(), nn.Conv1d(64, 64, 5, stride=2, padding=2)]
            self.body = nn.Sequential(*layers, nn.GELU())
            self.head = nn.Linear(128, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return self.head(torch.cat([h.mean(-1), h.amax(-1)], 1))

    return Net()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="digits")
    ap.add_argument("--model", default="walloc-audio")
    ap.add_argument("--train-per-digit", type=int, default=120)
    ap.add_argument("--test-per-digit", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)

    # 1. Render the clips (seeded; split by voice variant).
    manifest = make_spoken_digits(out / "clips", args.train_per_digit, args.test_per_digit, seed=0)
    print(f"test voices never heard in training: {', '.join(manifest['test_variants'])}")

    # 2. Encode once, labels from the class folders (a progress bar on a terminal; resumable).
    for split in ("train", "test"):
        pack(out / "clips" / split, out / "shards" / split, model=args.model, labels_from_dirs=True, shard_size=500)

    # 3. Decode the latents once (entropy decoding only, in DataLoader workers) and train on them
    # in memory: on the CPU one clip's entropy decoding costs more than its training steps.
    def decode(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = LatentDataset(out / "shards" / split, model=args.model, batch_size=32)
        batches = list(DataLoader(ds, batch_size=None, num_workers=args.workers))
        latents = torch.cat([b["latent"] for b in batches]).float()
        # The magnitude envelope log(1 + |latent|) classifies far better than the signed values,
        # whose signs carry mostly waveform phase (as log-mel beats raw samples).
        return torch.log1p(latents.abs()), torch.cat([b["label"] for b in batches])

    xtr, ytr = decode("train")
    xte, yte = decode("test")
    mean, std = xtr.mean((0, 2), keepdim=True), xtr.std((0, 2), keepdim=True).clamp_min(1e-3)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    print(f"latents: train {tuple(xtr.shape)}, test {tuple(xte.shape)}")
    torch.manual_seed(0)
    model = classifier(xtr.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(xtr)).split(32):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(xte).argmax(1) == yte).float().mean())
        print(f"epoch {epoch}: loss {loss.item():.3f}, test accuracy {accuracy:.4f} (unseen voices)")


if __name__ == "__main__":
    main()
