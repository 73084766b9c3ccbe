"""Vector quantizers: codebook utilization, perplexity and speed of ours vs vector-quantize-pytorch.

Part 1, codebook use of direct quantization. Each quantizer directly quantizes the same stream of training batches
(same seed, same steps; EMA codebooks learn in the forward pass, SimVQ's linear map by Adam) and
is then evaluated on held-out vectors in eval mode: utilization (fraction of codes used),
perplexity (effective number of codes) and mean squared quantization error. Two datasets:

* ``mixture``: a 1024-component Gaussian mixture in 16-D (made here, always available);
* ``patches``: 4x4 grey-level patches of the lab's eval24 photos (16-D; skipped with a message
  when ``../shared/data`` is absent).

Part 2, the same quantizers between a small MLP encoder and decoder trained end to end by Adam
on the mixture (utilization and perplexity of the held-out codes, reconstruction error).

Part 3, forward speed in vectors/s on one CPU thread, eval mode (no grad) and train mode (input
that requires grad, EMA update included, no backward), for the same dim and codebook size; ours
and the peer are timed alternately and the best of ``--repeats`` runs is kept.

Usage: ``python benchmarks/bench_vq.py [--steps 300] [--quick]``. Needs vector-quantize-pytorch
(``pip install -e .[bench]``, pinned there). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from neuralcodec.codecs import ResidualVQ, VectorQuantizer
from neuralcodec.codecs.quantizers import codebook_stats, usage_counts

try:
    import vector_quantize_pytorch as vqp
except ImportError:  # the comparison is the point of this benchmark: say so and stop
    print("vector-quantize-pytorch is not installed: pip install -e .[bench]", file=sys.stderr)
    raise SystemExit(2)

DIM = 16
CODEBOOK_SIZE = 1024
BATCH = 1024


def data_root() -> Path:
    env = os.environ.get("NEURALCODEC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


# -- datasets: a sampler of training batches and a held-out set ------------------------------------


def mixture_dataset(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(1024, DIM, generator=generator)

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return centers[torch.randint(len(centers), (n,), generator=gen)] + 0.2 * torch.randn(n, DIM, generator=gen)

    return sample, sample(16384, torch.Generator().manual_seed(seed + 1))


def patch_dataset(seed: int = 0):
    from PIL import Image

    folder = data_root() / "images" / "eval24"
    files = sorted(folder.glob("*.png"))
    if len(files) < 8:
        return None
    def patches(paths):
        out = []
        for path in paths:
            grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
            h, w = (grey.shape[0] // 4) * 4, (grey.shape[1] // 4) * 4
            blocks = grey[:h, :w].reshape(h // 4, 4, w // 4, 4).transpose(0, 2, 1, 3).reshape(-1, 16)
            out.append(torch.from_numpy(blocks.copy()))
        return torch.cat(out)

    train, held_out = patches(files[:16]), patches(files[16:])
    held_out = held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed + 1))[:16384]]

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return train[torch.randint(len(train), (n,), generator=gen)]

    return sample, held_out


# -- the quantizers under test: name -> (build, needs_optimizer) ----------------------------------

CONFIGS = {
    "ours default (dead-code patience)": (lambda: VectorQuantizer(DIM, CODEBOOK_SIZE), False),
    "ours, no dead-code replacement": (lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, dead_code_patience=None), False),
    "ours, threshold_ema_dead_code=2": (
        lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, dead_code_patience=None, threshold_ema_dead_code=2),
        False,
    ),
    "ours, threshold_ema_dead_code=0.1": (
        lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, dead_code_patience=None, threshold_ema_dead_code=0.1),
        False,
    ),
    "ours, kmeans_init + default": (lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, kmeans_init=True), False),
    "ours, sim_vq": (lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, sim_vq=True), True),
    "vqp default": (lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE), False),
    "vqp threshold_ema_dead_code=2": (
        lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE, threshold_ema_dead_code=2),
        False,
    ),
    # The fair share of a code is BATCH / CODEBOOK_SIZE = 1 vector per batch here, so an EMA cluster
    # size of 2 flags nearly every code as dead; 0.1 is a threshold suited to this batch size.
    "vqp threshold_ema_dead_code=0.1": (
        lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE, threshold_ema_dead_code=0.1),
        False,
    ),
    "vqp kmeans_init + threshold_ema_dead_code=2": (
        lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE, kmeans_init=True, threshold_ema_dead_code=2),
        False,
    ),
    "vqp SimVQ": (lambda: vqp.SimVQ(dim=DIM, codebook_size=CODEBOOK_SIZE), True),
}


def codebook_use(build, needs_optimizer: bool, sample, held_out: torch.Tensor, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    quantizer = build()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-3) if needs_optimizer else None
    quantizer.train()
    for _ in range(steps):
        batch = sample(BATCH, generator).unsqueeze(0)
        _, _, loss = quantizer(batch)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
    quantizer.eval()
    with torch.no_grad():
        quantized, indices, _ = quantizer(held_out.unsqueeze(0))
    stats = codebook_stats(usage_counts(indices, CODEBOOK_SIZE))
    return {
        "utilization": round(stats["utilization"], 4),
        "perplexity": round(stats["perplexity"], 1),
        "mse": float(f"{float((quantized[0] - held_out).square().mean()):.5g}"),
    }


# -- the same quantizers inside a small autoencoder trained end to end ----------------------------

AUTOENCODER_CONFIGS = {
    "ours default (straight-through)": lambda: VectorQuantizer(DIM, CODEBOOK_SIZE),
    "ours default + rotation_trick": lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, rotation_trick=True),
    "ours, no dead-code replacement": lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, dead_code_patience=None),
    "ours, sim_vq": lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, sim_vq=True),
    "ours, sim_vq + rotation_trick": lambda: VectorQuantizer(DIM, CODEBOOK_SIZE, sim_vq=True, rotation_trick=True),
    "vqp default (rotation trick)": lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE),
    "vqp threshold_ema_dead_code=2": lambda: vqp.VectorQuantize(
        dim=DIM, codebook_size=CODEBOOK_SIZE, threshold_ema_dead_code=2
    ),
    "vqp threshold_ema_dead_code=0.1": lambda: vqp.VectorQuantize(
        dim=DIM, codebook_size=CODEBOOK_SIZE, threshold_ema_dead_code=0.1
    ),
    "vqp SimVQ": lambda: vqp.SimVQ(dim=DIM, codebook_size=CODEBOOK_SIZE),
}


def autoencoder_use(build, sample, held_out: torch.Tensor, steps: int, seed: int) -> dict:
    """MLP encoder -> quantizer -> MLP decoder, Adam on reconstruction MSE + the quantizer's loss."""
    torch.manual_seed(seed)  # the same encoder and decoder weights for every quantizer

    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(DIM, 64), torch.nn.GELU(), torch.nn.Linear(64, DIM))

    encoder, decoder = mlp(), mlp()
    quantizer = build()
    modules = torch.nn.ModuleList([encoder, quantizer, decoder])
    optimizer = torch.optim.Adam(modules.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    modules.train()
    for _ in range(steps):
        x = sample(BATCH, generator).unsqueeze(0)
        quantized, _, loss = quantizer(encoder(x))
        total = torch.nn.functional.mse_loss(decoder(quantized), x) + loss.sum()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    modules.eval()
    with torch.no_grad():
        quantized, indices, _ = quantizer(encoder(held_out.unsqueeze(0)))
        reconstruction = decoder(quantized)[0]
    stats = codebook_stats(usage_counts(indices, CODEBOOK_SIZE))
    return {
        "utilization": round(stats["utilization"], 4),
        "perplexity": round(stats["perplexity"], 1),
        "mse": float(f"{float((reconstruction - held_out).square().mean()):.5g}"),
    }


# -- speed ---------------------------------------------------------------------------------------


def forward_seconds(quantizer, x: torch.Tensor, train: bool) -> float:
    inp = x.clone().requires_grad_(train)
    start = time.perf_counter()
    if train:
        quantizer(inp)
    else:
        with torch.no_grad():
            quantizer(inp)
    return time.perf_counter() - start


def compare_speed(ours, peer, x: torch.Tensor, train: bool, repeats: int) -> tuple[float, float]:
    """Vectors/s of both, timed alternately (so both see the same load) and taken at the best run:
    the CPU is shared, and the fastest run is the one least disturbed by other processes."""
    ours.train(train)
    peer.train(train)
    forward_seconds(ours, x, train)  # warm-up (and any lazy initialisation)
    forward_seconds(peer, x, train)
    ours_times, peer_times = [], []
    for _ in range(repeats):
        ours_times.append(forward_seconds(ours, x, train))
        peer_times.append(forward_seconds(peer, x, train))
    vectors = x.shape[0] * x.shape[1]
    return vectors / min(ours_times), vectors / min(peer_times)


def speed_cases(quick: bool):
    n = 4096 if quick else 16384
    yield (
        f"VQ dim={DIM} K={CODEBOOK_SIZE}",
        lambda: VectorQuantizer(DIM, CODEBOOK_SIZE),
        lambda: vqp.VectorQuantize(dim=DIM, codebook_size=CODEBOOK_SIZE, rotation_trick=False),
        torch.randn(1, n, DIM),
    )
    yield (
        "VQ dim=128 K=1024",
        lambda: VectorQuantizer(128, 1024),
        lambda: vqp.VectorQuantize(dim=128, codebook_size=1024, rotation_trick=False),
        torch.randn(1, n, 128),
    )
    yield (
        "RVQ dim=128 Q=8 K=1024",
        lambda: ResidualVQ(dim=128, num_quantizers=8, codebook_size=1024),
        lambda: vqp.ResidualVQ(dim=128, num_quantizers=8, codebook_size=1024, rotation_trick=False),
        torch.randn(1, n // 4, 128),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training batches of 1024 vectors per quantizer")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per speed figure (best of)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller speed batches (smoke test)")
    args = parser.parse_args()
    steps = 30 if args.quick else args.steps
    torch.set_num_threads(1)
    vqp_version = metadata.version("vector-quantize-pytorch")
    print(f"vector-quantize-pytorch {vqp_version}, torch {torch.__version__}, 1 thread")
    result: dict = {"vector_quantize_pytorch": vqp_version, "dim": DIM, "codebook_size": CODEBOOK_SIZE,
                    "batch": BATCH, "steps": steps, "codebook_use": {}, "speed": {}}

    datasets = {"mixture": mixture_dataset()}
    patches = patch_dataset()
    if patches is None:
        print(f"patches: skipped, no eval24 photos under {data_root()}")
    else:
        datasets["patches"] = patches
    for data_name, (sample, held_out) in datasets.items():
        print(f"\n[{data_name}] {steps} steps x {BATCH} vectors, held-out {len(held_out)} vectors, K={CODEBOOK_SIZE}")
        print(f"  {'quantizer':46s} {'util':>6s} {'perplex':>8s} {'mse':>9s}")
        rows = {}
        for name, (build, needs_optimizer) in CONFIGS.items():
            row = codebook_use(build, needs_optimizer, sample, held_out, steps, seed=0)
            rows[name] = row
            print(f"  {name:46s} {row['utilization']:6.3f} {row['perplexity']:8.1f} {row['mse']:9.5f}")
        ours = rows["ours default (dead-code patience)"]
        for peer_name in ("vqp default", "vqp threshold_ema_dead_code=2", "vqp threshold_ema_dead_code=0.1"):
            peer = rows[peer_name]
            print(
                f"  ours default vs {peer_name}: utilization {ours['utilization'] / peer['utilization']:.2f}x, "
                f"perplexity {ours['perplexity'] / peer['perplexity']:.2f}x, mse {ours['mse'] / peer['mse']:.2f}x"
            )
        result["codebook_use"][data_name] = rows

    sample, held_out = datasets["mixture"]
    print(f"\n[autoencoder on mixture] MLP encoder/decoder, Adam 1e-3, {steps} steps x {BATCH}; mse = reconstruction")
    print(f"  {'quantizer':46s} {'util':>6s} {'perplex':>8s} {'mse':>9s}")
    rows = {}
    for name, build in AUTOENCODER_CONFIGS.items():
        row = autoencoder_use(build, sample, held_out, steps, seed=0)
        rows[name] = row
        print(f"  {name:46s} {row['utilization']:6.3f} {row['perplexity']:8.1f} {row['mse']:9.5f}")
    result["autoencoder"] = rows

    print("\n[speed] forward vectors/s, 1 thread (ours default vs vqp with rotation_trick=False: both straight-through)")
    for label, build_ours, build_vqp, x in speed_cases(args.quick):
        entry = {}
        for mode, train in (("eval", False), ("train", True)):
            torch.manual_seed(0)
            ours, peer = compare_speed(build_ours(), build_vqp(), x, train, args.repeats)
            entry[mode] = {"ours_vps": round(ours), "vqp_vps": round(peer), "ratio": round(ours / peer, 2)}
            print(f"  {label:26s} {mode:5s} ours {ours:12,.0f}  vqp {peer:12,.0f}  ours/vqp {ours / peer:5.2f}x")
        result["speed"][label] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
