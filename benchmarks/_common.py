"""Shared pieces of the benchmark scripts (imported as ``_common``: each script's folder is on ``sys.path``).

>>> import torch
>>> from torch import nn
>>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
>>> acc, sps = train_and_test(nn.Linear(4, 2), x, y, x, y, epochs=1, batch=16, lr=1e-2, seed=0)
>>> 0.0 <= acc <= 1.0 and sps > 0
True
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def data_root() -> Path:
    """The lab corpus: ``$NEURALCODEC_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("NEURALCODEC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_codec_or_skip(name: str, device: str = "cpu") -> Any | None:
    """The codec ``name`` (a shipped name or a saved model path), or ``None`` after printing the
    SKIP line and the benchmark's closing JSON (``{"skipped": ...}``) when it is not installed."""
    from neuralcodec.codecs.registry import load
    from neuralcodec.errors import ModelNotFoundError

    try:
        return load(name, device=device)
    except ModelNotFoundError as e:
        print(f"SKIP: {e}")
        print(json.dumps({"skipped": f"model {name} not available"}))
        return None


def train_and_test(model: nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
                   epochs: int, batch: int, lr: float, seed: int, weight_decay: float = 1e-4,
                   one_cycle: bool = False, eval_batch: int = 1000) -> tuple[float, float]:
    """Train a classifier with AdamW (optionally a one-cycle schedule); returns (test accuracy,
    training samples/s). The same seed gives the same batches for every input representation."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = None
    if one_cycle:
        steps = epochs * -(-len(xtr) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    seen, t0 = 0, time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            seen += len(idx)
    throughput = seen / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i : i + eval_batch]).argmax(1) for i in range(0, len(xte), eval_batch)])
    return float((pred == yte).float().mean()), throughput


def time_files(dataset: torch.utils.data.Dataset, batch: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Read a map-style ``(x, label)`` dataset of media files in order (one process, as the
    latent loader runs): ``(xs, labels, items/s, seconds to the first batch)``."""
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    xs, ys, first = [], [], None
    for x, y in loader:
        if first is None:
            first = time.perf_counter() - t0
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys), len(dataset) / (time.perf_counter() - t0), first or 0.0


def time_latents(path: Any, codec: Any, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Read packed shards with :class:`neuralcodec.datasets.LatentDataset`: ``(latents, labels,
    items/s, seconds to the first batch)``, latents on the CPU."""
    from neuralcodec.datasets import LatentDataset

    t0 = time.perf_counter()
    ds = LatentDataset(path, model=codec, batch_size=batch, device=device)
    xs, ys, first = [], [], None
    for b in ds:
        if first is None:
            first = time.perf_counter() - t0
        xs.append(b["latent"].cpu())
        ys.append(b["label"])
    return torch.cat(xs), torch.cat(ys), ds.num_items / (time.perf_counter() - t0), first or 0.0


def folder_bytes(folder: Path, suffix: str | None = None) -> int:
    """Total size of the files below ``folder`` (only those ending in ``suffix`` if given)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (suffix is None or p.suffix == suffix))


class LabeledFiles(torch.utils.data.Dataset):
    """``(x, label)`` for a list of media files; a subclass says how one file decodes (:meth:`load`)."""

    def __init__(self, paths: list[Path], labels: Any) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.load(self.paths[i]), int(self.labels[i])

    def load(self, path: Path) -> torch.Tensor:
        raise NotImplementedError
