"""Training recipe of the WaLLoC-audio RVQ token codec: ``codec train walloc-audio-rvq ...``.

The analysis and synthesis are WaLLoC-audio's, frozen, so the recipe trains only what is new,
cheaply, on latents computed once:

1. **Copy** the base model's encoder, channel gains and decoder into a fresh
   :class:`~neuralcodec.codecs.walloc_audio_rvq.WaLLoCAudioRVQ` (self-contained weights).
2. **Latents**: every training file is coded as the codec codes it (per-file, per-pair gain to
   ``target_rms``, analysis in blocks) and its continuous latents are kept (float16, cached in
   ``<out>/latents.safetensors``, so a second run skips this).
3. **Codebooks**: random windows of the latents go through the grouped residual VQ in training
   mode: k-means initialisation on a large first batch (all quantizers), then EMA updates with
   dead-code replacement and per-example quantizer dropout (DAC). With a frozen encoder the
   dropout changes only how many vectors the deeper codebooks see; it matters for step 5.
4. **Priors**: the tokens of all training latents (eval mode, all quantizers) are counted per
   codebook and each prior becomes ``log(count + 0.5)``; ``update()`` freezes the integer tables
   (float64, deterministic) that ship with the weights.
5. **Decoder** (optional, ``--decoder-steps``): the decoder is fine-tuned on quantized latents
   with a random number of quantizers per example, towards the frozen decoder's output for the
   unquantized latents (coefficient-domain MSE; needs no audio).

``codec train walloc-audio-rvq --data ../shared/data/audio/train --out runs/walloc-audio-rvq``

>>> RVQTrainConfig(data="music", out="runs/x").codebook_size
512
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["RVQTrainConfig", "train_walloc_audio_rvq", "walloc_audio_rvq_command", "precompute_latents",
           "codebook_report"]


@dataclass
class RVQTrainConfig:
    """Everything a token-codec training run depends on (saved in the model card)."""

    data: str
    out: str
    name: str = "walloc-audio-rvq"
    base: str = "walloc-audio"
    groups: int = 2
    num_quantizers: int = 8
    codebook_size: int = 512
    quantize_dropout: float = 0.5
    decay: float = 0.99
    steps: int = 2000
    batch_sequences: int = 64
    window: int = 64
    init_vectors: int = 65536
    prior_frames: int = 262144
    decoder_steps: int = 0
    init_from: str | None = None
    decoder_lr: float = 1e-4
    decoder_batch: int = 16
    decoder_window: int = 256
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = 1
    log_every: int = 100


def precompute_latents(model: Any, folder: str | os.PathLike, cache: Path | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Continuous latents of every audio file of ``folder`` as the codec computes them.

    Returns ``{name: (C_lat, n) float16 tensor}`` (one entry per file and stereo pair). With
    ``cache`` set, a matching cache is reused and a new one written (safetensors).
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..datasets.audio import AUDIO_TRAIN_SUFFIXES
    from ..datasets.media import read_media

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_TRAIN_SUFFIXES and p.is_file())
    if not files:
        raise click.ClickException(f"{folder}: no audio files")
    from ..entropy.tables import tensor_hash

    analysis = [model.encoder.weight.detach().cpu(), model.log_gain.detach().cpu()]
    key = json.dumps({"files": [(p.name, p.stat().st_size) for p in files], "analysis": tensor_hash(*analysis),
                      "target_rms": model.target_rms, "block_frames": model.block_frames,
                      "margin_frames": model.margin_frames})
    if cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
        if cache.with_suffix(".json").read_text() == key:
            return load_file(str(cache))
    out: dict[str, Any] = {}
    with torch.no_grad():
        for i, path in enumerate(files):
            media = read_media(path)
            pairs, codes, _ = model._prepare(media.data, int(media.metadata["sample_rate"]))
            y = model._analysis_blocks(pairs)
            for p in range(y.shape[0]):
                if int(codes[p]) != -32768:  # a silent pair teaches nothing
                    out[f"{path.name}#{p}"] = y[p].to(torch.float16).contiguous()
            if progress:
                print(f"latents {i + 1}/{len(files)} {path.name}: {y.shape[-1]} frames", file=sys.stderr)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, str(cache))
        cache.with_suffix(".json").write_text(key)
    return out


def _windows(latents: list[Any], count: int, window: int, rng: Any) -> Any:
    """``(count, C_lat, window)`` float32 windows at random places (tracks weighted by length)."""
    import numpy as np
    import torch

    lengths = np.array([max(t.shape[-1] - window, 0) + 1 for t in latents], dtype=np.float64)
    picks = rng.choice(len(latents), size=count, p=lengths / lengths.sum())
    out = []
    for k in picks:
        t = latents[k]
        start = int(rng.integers(0, max(t.shape[-1] - window, 0) + 1))
        piece = t[:, start:start + window].float()
        if piece.shape[-1] < window:
            piece = torch.nn.functional.pad(piece, (0, window - piece.shape[-1]))
        out.append(piece)
    return torch.stack(out)


def count_tokens(model: Any, latents: list[Any], chunk: int = 8192) -> Any:
    """Token counts ``(Q, G, K)`` of ``latents`` quantized with all quantizers (eval mode)."""
    import torch

    counts = torch.zeros(model.num_quantizers, model.groups, model.codebook_size, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for t in latents:
            for a in range(0, t.shape[-1], chunk):
                _, tokens, _ = model.quantize(t[None, :, a:a + chunk].float())
                flat = tokens[0].reshape(model.groups, model.num_quantizers, -1)  # (G, Q, n)
                for g in range(model.groups):
                    for q in range(model.num_quantizers):
                        counts[q, g] += torch.bincount(flat[g, q], minlength=model.codebook_size).double()
    model.train(was_training)
    return counts


def codebook_report(counts: Any) -> list[list[dict[str, float]]]:
    """Utilization, perplexity, dead codes and entropy of every codebook, ``[quantizer][group]``."""
    from ..codecs.quantizers import codebook_stats

    return [[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in codebook_stats(c).items()}
             for c in per_q] for per_q in counts]


def train_walloc_audio_rvq(cfg: RVQTrainConfig, progress: bool = True, command: str | None = None) -> Path:
    """Run a training run (see the module docstring); returns the exported model's path (no suffix)."""
    import numpy as np
    import torch

    from .. import load
    from ..codecs.registry import build, read_card, save

    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base = load(cfg.base)
    bc = base.config
    model = build("walloc-audio-rvq", {
        "latent_channels": bc["latent_channels"], "levels": bc["levels"], "wavelet": bc["wavelet"],
        "decoder_channels": bc["decoder_channels"], "decoder_blocks": bc["decoder_blocks"],
        "sample_rate": bc["sample_rate"], "target_rms": bc["target_rms"], "groups": cfg.groups,
        "num_quantizers": cfg.num_quantizers, "codebook_size": cfg.codebook_size,
        "quantize_dropout": cfg.quantize_dropout, "decay": cfg.decay,
    })
    model.name = cfg.name
    model.load_analysis_synthesis(base)
    prior_card = None
    if cfg.init_from:  # continue from an exported model of this recipe (its codebooks, priors, decoder)
        model.load_state_dict(load(cfg.init_from).state_dict(), strict=True)
        prior_card = read_card(cfg.init_from)
    for p in model.frozen_parameters():
        p.requires_grad_(False)
    model.eval()

    # 1-2. latents of the training set, once.
    t0 = time.time()
    cache = out / "latents.safetensors"
    table = precompute_latents(model, cfg.data, cache, progress)
    names = sorted(table)
    latents = [table[k] for k in names]
    frames = sum(t.shape[-1] for t in latents)
    latent_seconds = time.time() - t0
    print(f"latents: {len(latents)} tracks, {frames} frames ({frames / model.frame_rate / 60:.1f} min), "
          f"{latent_seconds:.0f} s", file=sys.stderr)

    # 3. codebooks: k-means init on a large batch (all quantizers), then EMA with dropout.
    t0 = time.time()
    model.quantizer.train()
    if not cfg.init_from:
        init = _windows(latents, max(cfg.init_vectors // cfg.window, 1), cfg.window, rng)
        with torch.no_grad():
            model.quantizer(model._interleave(init), model.num_quantizers)
    model.quantizer.reset_stats()
    steps, log = 0, []
    with torch.no_grad():
        while steps < cfg.steps and not (cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes):
            batch = _windows(latents, cfg.batch_sequences, cfg.window, rng)
            y_hat, _, loss = model.quantize(batch)
            steps += 1
            if steps % cfg.log_every == 0 or steps == cfg.steps:
                stats = model.quantizer.stats()
                used = float(np.mean([s["utilization"] for g in stats for s in g]))
                mse = float(((y_hat - batch) ** 2).mean() / (batch ** 2).mean())
                log.append({"step": steps, "vq_loss": float(loss), "relative_mse_dropout": mse, "utilization": used,
                            "elapsed_s": round(time.time() - t0, 1)})
                if progress:
                    print(f"codebooks step {steps}: rel. mse {mse:.4f} (dropout), utilization {used:.3f}",
                          file=sys.stderr)
    codebook_seconds = time.time() - t0
    model.quantizer.eval()

    # 5. optional decoder fine-tune on quantized latents (before the priors: they do not depend on it).
    decoder_info = None
    if cfg.decoder_steps > 0:
        decoder_info = _finetune_decoder(model, latents, cfg, rng, progress)

    # 4. priors from the token counts of all training latents.
    t0 = time.time()
    # Random windows of the training latents (all of them when they are fewer frames than prior_frames).
    prior_latents = latents if frames <= cfg.prior_frames else list(
        _windows(latents, max(cfg.prior_frames // 512, 1), 512, rng).to(torch.float16))
    counts = count_tokens(model, prior_latents)
    for q, prior in enumerate(model.priors):
        prior.set_from_counts(counts[q], prior=0.5)
    model.update()
    probs = (counts + 0.5) / (counts + 0.5).sum(-1, keepdim=True)
    entropy_bits = [[float(-(p * p.log2()).sum()) for p in per_q] for per_q in probs]
    prior_seconds = time.time() - t0

    model.eval()
    wall = time.time() - t_start
    card = {
        "description": "Token codec for stereo music: the frozen WaLLoC-audio analysis/synthesis (copied in), "
                       "grouped residual VQ (channels interleaved into groups), per-codebook categorical "
                       "priors coded with rANS; bitrate chosen at encode time by the number of quantizers",
        "base_model": {"name": cfg.base, "weights_hash": base.weights_hash(),
                       "copied": "encoder, channel gains, decoder" + (" (decoder then fine-tuned)" if cfg.decoder_steps
                                                                        or (prior_card or {}).get("decoder_finetuned")
                                                                        else " (unchanged)")},
        "decoder_finetuned": bool(cfg.decoder_steps or (prior_card or {}).get("decoder_finetuned")),
        "init_from": None if prior_card is None else {"path": cfg.init_from, "training": prior_card.get("training")},
        "tokens": {
            "layout": "(groups, quantizers, frames) for mono/stereo, (pairs, groups, quantizers, frames) for more",
            "frame_rate_hz": model.frame_rate, "groups": model.groups, "num_quantizers": model.num_quantizers,
            "codebook_size": model.codebook_size,
            "raw_kbps_per_quantizer": model.raw_kbps(1),
            "raw_kbps": {str(k): model.raw_kbps(k) for k in range(1, model.num_quantizers + 1)},
        },
        "training": {
            "command": command or "neuralcodec.apps.train_walloc_audio_rvq.train_walloc_audio_rvq(...)",
            "data": str(cfg.data), "data_tracks": len(latents), "latent_frames": frames,
            "data_minutes": round(frames / model.frame_rate / 60, 1),
            "config": asdict(cfg), "codebook_steps": steps,
            "prior_frames": int(sum(t.shape[-1] for t in prior_latents)),
            "vectors_per_step": cfg.batch_sequences * cfg.window,
            "log": log, "decoder_finetune": decoder_info,
            "wall_time_s": {"latents": round(latent_seconds, 1), "codebooks": round(codebook_seconds, 1),
                            "priors": round(prior_seconds, 1), "total": round(wall, 1)},
            "threads": torch.get_num_threads(), "device": "cpu",
            "prior_entropy_bits": entropy_bits,
            "codebooks_on_training_latents": codebook_report(counts),
        },
    }
    path = save(model, out / cfg.name, card)
    print(f"exported {path}.safetensors / .json ({wall:.0f} s)", file=sys.stderr)
    return path


def _finetune_decoder(model: Any, latents: list[Any], cfg: RVQTrainConfig, rng: Any, progress: bool) -> dict:
    """Fine-tune the decoder on quantized latents towards the frozen decoder's unquantized output."""
    import copy

    import numpy as np
    import torch

    t0 = time.time()
    teacher = copy.deepcopy(model.decoder).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = list(model.decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.decoder_lr)
    model.decoder.train()
    losses, step = [], 0
    gain = model._gain()
    while step < cfg.decoder_steps and not (cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes):
        y = _windows(latents, cfg.decoder_batch, cfg.decoder_window, rng)
        counts = torch.from_numpy(rng.integers(1, model.num_quantizers + 1, size=cfg.decoder_batch))
        with torch.no_grad():
            tokens = model.quantize(y, model.num_quantizers)[1]
            # Per-example quantizer count (dropout): example b keeps its first counts[b] quantizers.
            y_hat = torch.stack([model.dequantize(tokens[b:b + 1, :, :int(counts[b])])[0]
                                 for b in range(tokens.shape[0])])
            target = teacher(model.compander.inverse(y) / gain)
        pred = model.decoder(model.compander.inverse(y_hat) / gain)
        loss = ((pred - target) ** 2).mean() / (target ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if progress and step % cfg.log_every == 0:
            print(f"decoder step {step}: rel. mse {np.mean(losses[-cfg.log_every:]):.4f}", file=sys.stderr)
    for p in params:
        p.requires_grad_(False)
    model.decoder.eval()
    tail = losses[-100:]
    return {"steps": step, "lr": cfg.decoder_lr, "batch": cfg.decoder_batch, "window_frames": cfg.decoder_window,
            "relative_mse_first_100": float(np.mean(losses[:100])) if losses else None,
            "relative_mse_last_100": float(np.mean(tail)) if tail else None,
            "wall_time_s": round(time.time() - t0, 1)}


@click.command("walloc-audio-rvq")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of music (WAV/FLAC/OGG).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (latent cache, export).")
@click.option("--name", default="walloc-audio-rvq", show_default=True, help="Exported model name.")
@click.option("--base", default="walloc-audio", show_default=True, help="WaLLoC-audio model whose analysis/synthesis is copied.")
@click.option("--groups", default=2, show_default=True, type=int)
@click.option("--num-quantizers", default=8, show_default=True, type=int)
@click.option("--codebook-size", default=512, show_default=True, type=int)
@click.option("--quantize-dropout", default=0.5, show_default=True, type=float, help="Fraction of examples with a random quantizer count (DAC).")
@click.option("--steps", default=2000, show_default=True, type=int, help="Codebook (EMA) steps.")
@click.option("--batch-sequences", default=64, show_default=True, type=int)
@click.option("--window", default=64, show_default=True, type=int, help="Latent frames per sequence.")
@click.option("--decoder-steps", default=0, show_default=True, type=int, help="Optional decoder fine-tune steps.")
@click.option("--decoder-lr", default=1e-4, show_default=True, type=float)
@click.option("--init-from", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Continue from an exported model of this recipe (.json); --steps 0 keeps its codebooks.")
@click.option("--max-minutes", default=None, type=float, help="Wall-time cap of each training phase.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int)
def walloc_audio_rvq_command(data: str, out: str, name: str, base: str, groups: int, num_quantizers: int,
                             codebook_size: int, quantize_dropout: float, steps: int, batch_sequences: int,
                             window: int, decoder_steps: int, decoder_lr: float, init_from: str | None,
                             max_minutes: float | None, seed: int, threads: int) -> None:
    """Train the WaLLoC-audio RVQ token codec on a music folder and export it.

    \b
    Example:
      codec train walloc-audio-rvq --data ../shared/data/audio/train --out runs/walloc-audio-rvq
    """
    cfg = RVQTrainConfig(data=data, out=out, name=name, base=base, groups=groups, num_quantizers=num_quantizers,
                         codebook_size=codebook_size, quantize_dropout=quantize_dropout, steps=steps,
                         batch_sequences=batch_sequences, window=window, decoder_steps=decoder_steps,
                         decoder_lr=decoder_lr, init_from=init_from, max_minutes=max_minutes, seed=seed,
                         threads=threads)
    command = "codec train walloc-audio-rvq " + " ".join(shlex.quote(a) for a in sys.argv[3:]) \
        if len(sys.argv) > 3 else None
    path = train_walloc_audio_rvq(cfg, command=command)
    click.echo(f"{path}.safetensors")


if __name__ == "__main__":  # python -m neuralcodec.apps.train_walloc_audio_rvq ... (same as codec train walloc-audio-rvq)
    walloc_audio_rvq_command()
