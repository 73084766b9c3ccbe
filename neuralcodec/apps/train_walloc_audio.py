"""Training recipe of the WaLLoC audio codec: ``codec train walloc-audio ...``.

Random crops of the music folder (decoded once, int16 in memory, every crop scaled to the
codec's ``target_rms`` as the codec scales every chunk), loss
``lmbda * MSE / target_rms**2 + bits per stereo frame`` (``bits/frame * rate / 1000`` is the
kbps), AdamW with the entropy model at a higher learning rate, step decay at ``decay_at`` of
the run (in steps or, with ``--max-minutes``, in wall time), a progress bar, a CSV log,
resumable checkpoints (safetensors + JSON, the helpers of :mod:`neuralcodec.apps.train`), a
second phase fitting the entropy model alone on the frozen integer latents, and the exported
model + model card.

``codec train walloc-audio --data ../shared/data/audio/train --out runs/walloc-audio --steps 3000``

>>> AudioTrainConfig(data="music", out="runs/x").levels
7
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

__all__ = ["AudioTrainConfig", "train_walloc_audio", "walloc_audio_command"]


@dataclass
class AudioTrainConfig:
    """Everything an audio training run depends on (saved in the checkpoint and the card)."""

    data: str
    out: str
    name: str = "walloc-audio"
    levels: int = 7
    latent_channels: int = 54
    decoder_channels: int = 128
    decoder_blocks: int = 3
    steps: int = 3000
    batch_size: int = 8
    crop: int = 65536
    lr: float = 2e-4
    entropy_lr_mult: float = 5.0
    lmbda: float = 50.0
    seed: int = 0
    threads: int | None = None
    max_seconds_per_file: float | None = None
    max_minutes: float | None = None
    decay_at: float = 0.85
    pca_crops: int = 128
    entropy_steps: int = 300
    entropy_lr: float = 2e-3
    entropy_batch: int = 8
    entropy_crop: int = 65536
    entropy_pool: int = 256
    reset_entropy: bool = False
    log_every: int = 25
    checkpoint_every: int = 100
    model_config: dict[str, Any] = field(default_factory=dict)  # extra WaLLoCAudio arguments
    device: str = "cpu"  # "cuda" trains on the GPU; the export is always a CPU model


def train_walloc_audio(cfg: AudioTrainConfig, resume: bool = False, progress: bool = True,
                       command: str | None = None) -> Path:
    """Run (or resume) a training run; returns the exported model's path (no suffix)."""
    import numpy as np
    import torch

    from ..codecs.registry import build, save
    from ..datasets.audio import AudioCropDataset
    from .train import RunCheckpoint, RunLog, _timed_lr_at, device_label, fit_entropy_model, training_device

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    log_path = out / "log.csv"
    device = training_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build("walloc-audio", {"latent_channels": cfg.latent_channels, "levels": cfg.levels,
                                   "decoder_channels": cfg.decoder_channels, "decoder_blocks": cfg.decoder_blocks,
                                   **cfg.model_config}).to(device)
    model.name = cfg.name
    t_load = time.time()
    data = AudioCropDataset(cfg.data, crop=cfg.crop, sample_rate=model.sample_rate,
                            max_seconds=cfg.max_seconds_per_file, target_rms=model.target_rms)
    print(f"data: {len(data)} files, {data.seconds / 60:.1f} min ({time.time() - t_load:.0f} s to decode)",
          file=sys.stderr)
    entropy_params = [p for n, p in model.named_parameters() if n.startswith("entropy.")]
    other_params = [p for n, p in model.named_parameters() if not n.startswith("entropy.")]
    opt = torch.optim.AdamW(
        [{"params": other_params, "lr_mult": 1.0}, {"params": entropy_params, "lr_mult": cfg.entropy_lr_mult}],
        lr=cfg.lr, weight_decay=0.0,
    )
    step, elapsed = 0, 0.0
    pca_kept = None
    ckpt = RunCheckpoint(out, {"model": model}, {"optimizer": ("", opt)})
    fresh = not (resume and ckpt.exists())
    if not fresh:
        info = ckpt.restore(rng)
        step, elapsed, pca_kept = info["step"], info["elapsed_s"], info.get("pca_kept")
    else:
        variances = model.init_from_data(data.sample(cfg.pca_crops, rng).to(device))
        pca_kept = float(variances[: model.latent_channels].sum() / variances.sum())
        print(f"PCA init: {pca_kept:.4f} of the wavelet-domain energy kept "
              f"(linear SNR bound {-10 * math.log10(1 - pca_kept):.1f} dB)", file=sys.stderr)

    def checkpoint() -> None:
        ckpt.save(step, elapsed, rng, config=asdict(cfg), pca_kept=pca_kept)

    kbps_per_bit = model.sample_rate / 1000.0
    model.train()
    recent: list[tuple[float, float, float]] = []
    log = RunLog(log_path, ["step", "loss", "mse_rel", "snr_db", "bits_per_frame", "kbps", "lr", "elapsed_s"], fresh,
                 cfg.steps, step, "train", progress)
    try:
        while step < cfg.steps and not (cfg.max_minutes and elapsed >= 60 * cfg.max_minutes):
            t0 = time.time()
            lr = _timed_lr_at(cfg, step, elapsed)
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            x = data.sample(cfg.batch_size, rng).to(device, non_blocking=True)
            out_ = model(x)
            mse_rel = torch.mean((out_["x_hat"] - x) ** 2) / model.target_rms**2
            frames = x.shape[0] * x.shape[2]
            bits = sum(-torch.log2(l).sum() for l in out_["likelihoods"].values()) / frames
            loss = cfg.lmbda * mse_rel + bits
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            elapsed += time.time() - t0
            recent.append((float(loss.detach()), float(mse_rel.detach()), float(bits.detach())))
            recent = recent[-200:]
            if step % cfg.log_every == 0 or step == cfg.steps:
                window = recent[-cfg.log_every:]
                m = float(np.mean([r[1] for r in window]))
                b = float(np.mean([r[2] for r in window]))
                log.row([step, f"{np.mean([r[0] for r in window]):.5f}", f"{m:.6f}", f"{-10 * math.log10(m):.3f}",
                         f"{b:.4f}", f"{b * kbps_per_bit:.2f}", lr, f"{elapsed:.1f}"],
                        snr=f"{-10 * math.log10(m):.2f}", kbps=f"{b * kbps_per_bit:.1f}")
            log.tick()
            if step % cfg.checkpoint_every == 0:
                checkpoint()
    finally:
        log.close()
    checkpoint()

    entropy_info = None
    if cfg.entropy_steps > 0:
        t_ent = time.time()
        entropy_info = fit_entropy_model(model, data, cfg, rng, progress=progress)  # type: ignore[arg-type]
        entropy_info["wall_time_s"] = round(time.time() - t_ent, 1)
        elapsed += entropy_info["wall_time_s"]
    model.cpu().eval()
    model.update()
    tail = recent[-200:]
    mse_tail = float(np.mean([r[1] for r in tail])) if tail else float("nan")
    bits_tail = float(np.mean([r[2] for r in tail])) if tail else float("nan")
    card = {
        "description": "WaLLoC audio codec (1D wavelet packet + linear encoder + context entropy model + CNN "
                       "decoder), stereo pairs, 44.1 kHz, per-chunk stored gain, chunked with overlap",
        "training": {
            "command": command or "neuralcodec.apps.train_walloc_audio.train_walloc_audio(...)",
            "data": str(cfg.data),
            "data_files": len(data),
            "data_minutes": round(data.seconds / 60, 1),
            "steps": step,
            "config": asdict(cfg),
            "pca_energy_kept": pca_kept,
            "entropy_phase": entropy_info,
            "wall_time_s": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "device": device_label(device),
            "final_train_metrics_last_200_steps": {
                "snr_db_normalized_crops": -10 * math.log10(mse_tail) if tail else None,
                "bits_per_frame_estimated": bits_tail,
                "kbps_estimated": bits_tail * kbps_per_bit,
            },
        },
    }
    path = save(model, out / cfg.name, card)
    print(f"exported {path}.safetensors / .json", file=sys.stderr)
    return path


@click.command("walloc-audio")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of music (WAV/FLAC/OGG, 44.1 kHz).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log, export).")
@click.option("--name", default="walloc-audio", show_default=True, help="Exported model name.")
@click.option("--levels", default=7, show_default=True, type=int, help="Wavelet packet levels J.")
@click.option("--latent-channels", default=54, show_default=True, type=int)
@click.option("--decoder-channels", default=128, show_default=True, type=int)
@click.option("--init-step", default=0.15, show_default=True, type=float, help="Initial quantization step (orthonormal units at target_rms).")
@click.option("--steps", default=3000, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--crop", default=65536, show_default=True, type=int, help="Samples per training crop.")
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--lmbda", default=50.0, show_default=True, type=float, help="lmbda*MSE/target_rms^2 + bits per frame.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="CPU threads (default: all cores).")
@click.option("--max-seconds-per-file", default=None, type=float, help="Use only the first seconds of each file.")
@click.option("--max-minutes", default=None, type=float, help="Stop the first phase after this wall time.")
@click.option("--entropy-steps", default=300, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="Training device (cpu, cuda, cuda:1...).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.* if present.")
def walloc_audio_command(data: str, out: str, name: str, levels: int, latent_channels: int, decoder_channels: int,
                         init_step: float,
                         steps: int, batch_size: int, crop: int, lr: float, lmbda: float, seed: int,
                         threads: int | None, max_seconds_per_file: float | None, max_minutes: float | None,
                         entropy_steps: int, device: str, resume: bool) -> None:
    """Train the WaLLoC audio codec on random crops of a music folder and export it.

    \b
    Example:
      codec train walloc-audio --data ../shared/data/audio/train --out runs/walloc-audio --steps 3000
    """
    cfg = AudioTrainConfig(data=data, out=out, name=name, levels=levels, latent_channels=latent_channels,
                           decoder_channels=decoder_channels, steps=steps, batch_size=batch_size, crop=crop, lr=lr,
                           lmbda=lmbda, seed=seed, threads=threads, max_seconds_per_file=max_seconds_per_file,
                           max_minutes=max_minutes, entropy_steps=entropy_steps,
                           model_config={"init_step": init_step}, device=device)
    command = "codec train walloc-audio " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    path = train_walloc_audio(cfg, resume=resume, command=command)
    click.echo(f"{path}.safetensors")


if __name__ == "__main__":  # python -m neuralcodec.apps.train_walloc_audio ... (same as codec train walloc-audio)
    walloc_audio_command()
