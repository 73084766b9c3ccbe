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

Part 4, the token codec ``walloc-audio-rvq`` on ``../shared/data/audio/eval`` (8 clips of 20 s;
skipped with a message when absent): each clip is coded once with all quantizers and cut to
``k`` quantizers by :meth:`WaLLoCAudioRVQ.truncate` (the same bytes as encoding with ``k``); for
every ``k``: kbps (whole file), SNR and SI-SDR (mean over clips of the per-clip dB), and the
entropy-coding saving of the token streams against raw ``log2(K)`` bits per token. Codebook
utilization and perplexity of the eval tokens per codebook. Named peers in the same run: the
base codec ``walloc-audio`` and Opus (libopus via PyAV) at the kbps of each ``k``.

Usage: ``python benchmarks/bench_vq.py [--steps 300] [--quick] [--token-only | --no-token]``. Needs vector-quantize-pytorch
(``pip install -e .[bench]``, pinned there). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from neuralcodec.codecs import ResidualVQ, VectorQuantizer
from neuralcodec.codecs.quantizers import codebook_stats, usage_counts
from _common import data_root  # benchmarks/_common.py

try:
    import vector_quantize_pytorch as vqp
except ImportError:  # the comparison is the point of this benchmark: say so and stop
    print("vector-quantize-pytorch is not installed: pip install -e .[bench]", file=sys.stderr)
    raise SystemExit(2)

DIM = 16
CODEBOOK_SIZE = 1024
BATCH = 1024


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


def token_codec(model_name: str, clips: int) -> dict:
    """Part 4 (see the module docstring); returns the JSON section."""
    from neuralcodec import available, load
    from neuralcodec.apps.baselines import Audio, get_baseline
    from neuralcodec.apps.metrics import si_sdr, snr
    from neuralcodec.datasets.media import read_audio
    from neuralcodec.entropy import Container

    folder = data_root() / "audio" / "eval"
    paths = sorted(folder.glob("*.flac"))[:clips]
    if not paths:
        print(f"token codec: skipped, no eval clips in {folder} (set NEURALCODEC_DATA)")
        return {"skipped": f"no eval clips in {folder}"}
    if model_name not in available() and not Path(model_name).exists():
        print(f"token codec: skipped, model {model_name!r} is not installed")
        return {"skipped": f"model {model_name!r} not installed"}
    model = load(model_name)
    base = load("walloc-audio")
    opus = get_baseline("opus")
    Q, K, G = model.num_quantizers, model.codebook_size, model.groups
    print(f"\n[token codec {model.name}] {len(paths)} clips from {folder}; G={G} groups x Q={Q} quantizers x K={K} "
          f"codes, {model.frame_rate:.1f} frames/s, raw {model.raw_kbps(1):.2f} kbps per quantizer")
    per_k: dict[int, list[dict]] = {k: [] for k in range(1, Q + 1)}
    base_rows, counts = [], torch.zeros(Q, G, K, dtype=torch.float64)
    seconds_total = 0.0
    for path in paths:
        x, rate = read_audio(path)
        seconds = x.shape[1] / rate
        seconds_total += seconds
        ref = x.numpy()
        t = time.perf_counter()
        full = model.compress(x, metadata={"sample_rate": rate})
        t_enc = time.perf_counter() - t
        tokens = model.tokens(full)
        # Information content under the shipped priors (what an ideal coder would spend), per quantizer.
        prior_bits = [float(model.priors[q].bits(tokens[None, :, q]).detach()) for q in range(Q)]
        for q in range(Q):
            for g in range(G):
                counts[q, g] += torch.bincount(tokens[g, q], minlength=K).double()
        for k in range(1, Q + 1):
            blob = full if k == Q else model.truncate(full, k)
            t = time.perf_counter()
            y = model.decompress(blob).numpy()
            t_dec = time.perf_counter() - t
            c = Container.from_bytes(blob)
            token_bytes = sum(len(v) for name, v in c.sections.items() if name.startswith("q"))
            raw_bits = tokens[:, :k].numel() * math.log2(K)
            kbps = len(blob) * 8 / seconds / 1000
            row = {"kbps": kbps, "token_kbps": token_bytes * 8 / seconds / 1000, "raw_token_kbps": raw_bits / seconds / 1000,
                   "snr_db": snr(ref, y), "si_sdr_db": si_sdr(ref, y), "saving": 1 - 8 * token_bytes / raw_bits,
                   "prior_saving": 1 - sum(prior_bits[:k]) / raw_bits, "coder_overhead": 8 * token_bytes / sum(prior_bits[:k]) - 1,
                   "encode_rtf": seconds / t_enc if k == Q else None, "decode_rtf": seconds / t_dec}
            if k in (1, Q // 2, Q) and opus.available:
                lo, hi = opus.quality_range
                audio = Audio(ref, rate)
                data = opus.encode(audio, float(min(max(kbps, lo), hi)))
                out = opus.decode(data, like=audio).samples
                row["opus"] = {"kbps": opus.payload_size(data) * 8 / seconds / 1000, "snr_db": snr(ref, out),
                               "si_sdr_db": si_sdr(ref, out)}
            per_k[k].append(row)
        blob = base.compress(x, metadata={"sample_rate": rate})
        yb = base.decompress(blob).numpy()
        base_rows.append({"kbps": len(blob) * 8 / seconds / 1000, "snr_db": snr(ref, yb), "si_sdr_db": si_sdr(ref, yb)})
        print(f"  {path.name}: k=1 {per_k[1][-1]['kbps']:.1f} kbps SI-SDR {per_k[1][-1]['si_sdr_db']:.2f} | "
              f"k={Q} {per_k[Q][-1]['kbps']:.1f} kbps SI-SDR {per_k[Q][-1]['si_sdr_db']:.2f} | walloc-audio "
              f"{base_rows[-1]['kbps']:.1f} kbps SI-SDR {base_rows[-1]['si_sdr_db']:.2f}")

    def mean(rows: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    summary = {}
    print("  saving = 1 - coded token bits / raw log2(K) bits; ideal = the same under the priors' information content")
    print(f"  {'k':>2s} {'kbps':>7s} {'raw':>7s} {'saving':>7s} {'ideal':>7s} {'SNR':>7s} {'SI-SDR':>7s} {'dec RTF':>8s}   opus at that kbps")
    for k, rows in per_k.items():
        entry = {key: mean(rows, key) for key in ("kbps", "token_kbps", "raw_token_kbps", "snr_db", "si_sdr_db",
                                                  "saving", "prior_saving", "coder_overhead", "decode_rtf")}
        # The saving of the whole token stream: bits over all clips, not a mean of ratios.
        entry["saving_total"] = 1 - sum(r["token_kbps"] for r in rows) / sum(r["raw_token_kbps"] for r in rows)
        opus_text = ""
        if "opus" in rows[0]:
            entry["opus"] = {key: float(np.mean([r["opus"][key] for r in rows])) for key in ("kbps", "snr_db", "si_sdr_db")}
            entry["si_sdr_gain_over_opus_db"] = entry["si_sdr_db"] - entry["opus"]["si_sdr_db"]
            opus_text = f"opus {entry['opus']['kbps']:.1f} kbps SI-SDR {entry['opus']['si_sdr_db']:.2f}"
        summary[str(k)] = entry
        print(f"  {k:2d} {entry['kbps']:7.2f} {entry['raw_token_kbps']:7.2f} {100 * entry['saving_total']:6.2f}% "
              f"{100 * entry['prior_saving']:6.2f}% "
              f"{entry['snr_db']:7.2f} {entry['si_sdr_db']:7.2f} {entry['decode_rtf']:7.1f}x   {opus_text}")
    walloc = {key: mean(base_rows, key) for key in ("kbps", "snr_db", "si_sdr_db")}
    print(f"  walloc-audio (same analysis, scalar quantization + context model): {walloc['kbps']:.2f} kbps "
          f"SNR {walloc['snr_db']:.2f} SI-SDR {walloc['si_sdr_db']:.2f}")
    stats = [[codebook_stats(c) for c in per_q] for per_q in counts]
    probs = counts / counts.sum(-1, keepdim=True)
    entropy = (-(probs * torch.log2(probs.clamp_min(1e-300))).sum(-1))  # empirical, per codebook
    for q in range(Q):
        text = ", ".join(f"g{g} util {s['utilization']:.3f} perplexity {s['perplexity']:.0f}" for g, s in enumerate(stats[q]))
        print(f"  codebook q{q}: {text}; empirical entropy of the eval tokens {float(entropy[q].mean()):.3f} bits "
              f"of {math.log2(K):.0f}")
    encode_rtf = float(np.mean([r["encode_rtf"] for r in per_k[Q]]))
    return {
        "model": model.name, "weights_hash": model.weights_hash(), "clips": len(paths), "seconds": seconds_total,
        "data": str(folder), "groups": G, "num_quantizers": Q, "codebook_size": K, "frame_rate_hz": model.frame_rate,
        "by_quantizers": summary, "walloc_audio": walloc, "encode_rtf_all_quantizers": encode_rtf,
        "codebooks_eval": [[{key: (round(v, 4) if isinstance(v, float) else v) for key, v in s.items()} for s in per_q]
                           for per_q in stats],
        "empirical_entropy_bits": [[round(float(e), 4) for e in per_q] for per_q in entropy],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training batches of 1024 vectors per quantizer")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per speed figure (best of)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller speed batches (smoke test)")
    parser.add_argument("--token-model", default="walloc-audio-rvq", help="token codec: shipped name or a saved .json")
    parser.add_argument("--clips", type=int, default=8, help="token codec: eval clips")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token-only", action="store_true", help="only part 4 (the token codec)")
    group.add_argument("--no-token", action="store_true", help="skip part 4")
    args = parser.parse_args()
    steps = 30 if args.quick else args.steps
    torch.set_num_threads(1)
    vqp_version = metadata.version("vector-quantize-pytorch")
    print(f"vector-quantize-pytorch {vqp_version}, torch {torch.__version__}, 1 thread")
    result: dict = {"vector_quantize_pytorch": vqp_version, "dim": DIM, "codebook_size": CODEBOOK_SIZE,
                    "batch": BATCH, "steps": steps, "codebook_use": {}, "speed": {}}
    if args.token_only:
        result = {"token_codec": token_codec(args.token_model, args.clips)}
        print(json.dumps(result))
        return

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
    if not args.no_token:
        result["token_codec"] = token_codec(args.token_model, args.clips)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
