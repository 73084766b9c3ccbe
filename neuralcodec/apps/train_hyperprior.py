"""Training recipe of the hyperprior codecs: ``codec train hyperprior ...``.

CompressAI's recipe on random crops of the training photos (downscaled by at least 2×,
Lanczos, by :class:`neuralcodec.datasets.images.ImageCropDataset`): loss
``lmbda * 255**2 * MSE + bpp`` (bits of ``y`` and ``z`` per pixel) with Adam, plus the
EntropyBottleneck's quantile loss with its own optimizer. The hyper-synthesis trains in
fixed point from the start (see :mod:`neuralcodec.codecs.hyperprior`), so the exported
model needs no conversion: ``update()`` builds the integer tables and the model is saved
with :func:`neuralcodec.codecs.registry.save` and a model card (command, data, steps,
wall time, and, with ``--eval-data``, the rate and PSNR measured on real ``.ncf`` files).

``codec train hyperprior --variant mean --N 64 --M 96 --lmbda 0.0067 \\
    --data ../shared/data/images/train --out runs/hyperprior-mean-q2 --name hyperprior-mean-q2``

>>> from neuralcodec.apps.train_hyperprior import HyperpriorTrainConfig
>>> HyperpriorTrainConfig(data="imgs", out="runs/x").variant
'mean'
"""

from __future__ import annotations

import functools
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["HyperpriorTrainConfig", "train_hyperprior", "evaluate_model", "hyperprior_command", "train_group",
           "round_to_half"]


@dataclass
class HyperpriorTrainConfig:
    """Everything a hyperprior training run depends on (saved in the checkpoint and card)."""

    data: str
    out: str
    variant: str = "mean"
    N: int = 64
    M: int = 96
    lmbda: float = 0.0067
    name: str | None = None
    steps: int = 4000
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    aux_lr: float = 1e-3
    decay_at: float = 0.85  # fraction of the steps after which the learning rate is divided by 10
    clip_grad: float = 1.0
    seed: int = 0
    threads: int | None = None
    min_downscale: float = 2.0
    max_minutes: float | None = None  # stop early (at a step boundary) after this wall time
    log_every: int = 25
    checkpoint_every: int = 250
    eval_data: str | None = None  # folder of images measured after training (the card's results)
    warmup_steps: int = 0  # linear learning-rate warm-up (fresh Adam moments disturb a warm-started model)
    init_from: str | None = None  # warm start: a shipped model name or a saved model path (same variant/N/M)
    device: str = "cpu"  # "cuda" trains on the GPU; the export is always a CPU model
    half: bool = False  # export the parameters rounded to and stored as float16 (half the file)


def evaluate_model(model: Any, folder: str | os.PathLike) -> dict[str, Any]:
    """Mean bpp (whole ``.ncf`` bytes), PSNR (RGB, 8-bit-rounded output) over a folder of images.

    >>> # evaluate_model(neuralcodec.load("hyperprior-mean-q2"), "../shared/data/images/eval24")
    """
    import numpy as np
    import torch
    from PIL import Image

    from ..datasets.images import IMAGE_SUFFIXES

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    bpps, psnrs = [], []
    for path in files:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)
        with torch.no_grad():
            blob = model.compress(x)
            y = model.decompress(blob)
        out = (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        mse = float(np.mean((out.astype(np.float64) - arr.astype(np.float64)) ** 2))
        bpps.append(8 * len(blob) / (arr.shape[0] * arr.shape[1]))
        psnrs.append(10 * math.log10(255**2 / max(mse, 1e-12)))
    return {"data": str(folder), "images": len(files), "bpp": float(np.mean(bpps)) if bpps else None,
            "psnr_rgb": float(np.mean(psnrs)) if psnrs else None}


HALF_EXPORT_NOTE = ("parameters rounded to float16 and stored as float16 (half the file), then the integer "
                    "tables rebuilt from the rounded parameters; every measured result is of the rounded model")


def round_to_half(model: Any) -> None:
    """Round a hyperprior's parameters to float16 values (in place) and rebuild its integer tables.

    The model then saves as float16 with :func:`neuralcodec.apps.train.save_half`
    without any further change: the tables, the weights hash and every measured result are
    those of the rounded model.

    >>> from neuralcodec.codecs.hyperprior import HyperpriorCodec
    >>> m = HyperpriorCodec(N=8, M=8).eval()
    >>> round_to_half(m)
    >>> all(bool((p == p.half().float()).all()) for p in m.parameters())
    True
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.update()


def _warm_start(model: Any, source: str) -> None:
    """Copy the weights of a shipped model (name) or saved model (path) into ``model``.

    The source must have the same variant, N and M (a clear error otherwise); its integer
    tables are copied too but rebuilt by ``update()`` at export.
    """
    from ..codecs.registry import load

    src = load(source)
    mine = {k: model.config[k] for k in ("variant", "N", "M", "weight_bits", "act_bits")}
    theirs = {k: src.config.get(k) for k in mine}
    if src.architecture != model.architecture or mine != theirs:
        raise click.BadParameter(f"--init-from {source}: {src.architecture} {theirs} does not match {mine}")
    model.load_state_dict(src.state_dict(), strict=True)
    print(f"warm start from {source} (weights {src.weights_hash()})", file=sys.stderr)


def train_hyperprior(cfg: HyperpriorTrainConfig, resume: bool = False, progress: bool = True,
                     command: str | None = None) -> Path:
    """Run (or resume) a hyperprior training run; returns the exported model's path (no suffix)."""
    import numpy as np
    import torch

    from ..codecs.hyperprior import HyperpriorCodec
    from ..codecs.registry import save
    from ..datasets.images import ImageCropDataset
    from .train import RunCheckpoint, RunLog, _timed_lr_at, device_label, training_device

    name = cfg.name or f"hyperprior-{cfg.variant}"
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    log_path = out / "log.csv"
    device = training_device(cfg.device)  # before loading data: a missing GPU fails at once
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_load = time.time()
    data = ImageCropDataset(cfg.data, crop=cfg.crop, min_downscale=cfg.min_downscale)
    print(f"data: {len(data)} images, {data.pixels / 1e6:.1f} MP after downscaling ({time.time() - t_load:.0f} s)",
          file=sys.stderr)
    model = HyperpriorCodec(variant=cfg.variant, N=cfg.N, M=cfg.M, lmbda=cfg.lmbda)
    model.name = name
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    ckpt = RunCheckpoint(out, {"model": model}, {"optimizer": ("main.", opt), "aux_optimizer": ("aux.", aux_opt)})
    fresh = not (resume and ckpt.exists())
    if cfg.init_from and fresh:
        _warm_start(model, cfg.init_from)
    model.to(device)

    step, elapsed = 0, 0.0
    if not fresh:
        info = ckpt.restore(rng)
        step, elapsed = info["step"], info["elapsed_s"]

    def checkpoint() -> None:
        ckpt.save(step, elapsed, rng, config=asdict(cfg))

    model.train()
    recent: list[tuple[float, float, float]] = []
    stopped_early = False
    with RunLog(log_path, ["step", "loss", "mse", "psnr", "bpp", "aux", "lr", "elapsed_s"], fresh, cfg.steps, step,
                name, progress) as log:
        while step < cfg.steps:
            if cfg.max_minutes is not None and elapsed > 60 * cfg.max_minutes:
                stopped_early = True
                break
            t0 = time.time()
            lr = _timed_lr_at(cfg, step, elapsed) * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            for group in opt.param_groups:
                group["lr"] = lr
            x = data.sample(cfg.batch_size, rng).to(device, non_blocking=True)
            out_ = model(x)
            mse = torch.mean((out_["x_hat"] - x) ** 2)
            pixels = x.shape[0] * x.shape[2] * x.shape[3]
            bpp = sum(-torch.log2(l).sum() for l in out_["likelihoods"].values()) / pixels
            loss = cfg.lmbda * 255**2 * mse + bpp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_grad)
            opt.step()
            aux = model.aux_loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
            step += 1
            elapsed += time.time() - t0
            recent.append((float(loss.detach()), float(mse.detach()), float(bpp.detach())))
            recent = recent[-200:]
            if step % cfg.log_every == 0 or step == cfg.steps:
                window = recent[-cfg.log_every:]
                m = float(np.mean([r[1] for r in window]))
                b = float(np.mean([r[2] for r in window]))
                l_ = float(np.mean([r[0] for r in window]))
                log.row([step, f"{l_:.5f}", f"{m:.7f}", f"{-10 * math.log10(m):.3f}", f"{b:.4f}",
                         f"{float(aux.detach()):.2f}", lr, f"{elapsed:.1f}"],
                        psnr=f"{-10 * math.log10(m):.2f}", bpp=f"{b:.3f}")
            log.tick()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
    checkpoint()

    model.cpu().eval()
    if cfg.half:
        round_to_half(model)
    else:
        model.update()
    tail = recent[-200:]
    mse_tail = float(np.mean([r[1] for r in tail])) if tail else float("nan")
    card: dict[str, Any] = {
        "description": (f"{'mean-scale' if cfg.variant == 'mean' else 'scale'} hyperprior image codec "
                        f"(N={cfg.N}, M={cfg.M}, lambda={cfg.lmbda}); fixed-point hyper-synthesis for "
                        "deterministic decoding on any device"),
        "training": {
            "command": command or "neuralcodec.apps.train_hyperprior.train_hyperprior(...)",
            "data": str(cfg.data),
            "data_images": len(data),
            "data_megapixels_after_downscale": round(data.pixels / 1e6, 2),
            "steps": step,
            "planned_steps": cfg.steps,
            "stopped_early_by_time_limit": stopped_early,
            "batch_size": cfg.batch_size,
            "crop": cfg.crop,
            "lr": cfg.lr,
            "warmup_steps": cfg.warmup_steps,
            "lmbda": cfg.lmbda,
            "init_from": cfg.init_from,
            "seed": cfg.seed,
            "wall_time_s": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "device": device_label(device),
            "final_train_metrics_last_200_steps": {
                "mse": mse_tail,
                "psnr": -10 * math.log10(mse_tail) if tail else None,
                "bpp": float(np.mean([r[2] for r in tail])) if tail else None,
            },
        },
    }
    if cfg.eval_data:
        t_eval = time.time()
        card["results"] = evaluate_model(model, cfg.eval_data)
        card["results"]["wall_time_s"] = round(time.time() - t_eval, 1)
        print(f"eval: {card['results']}", file=sys.stderr)
    if cfg.half:
        from .train import save_half

        card["training"]["export"] = HALF_EXPORT_NOTE
        path = save_half(model, out / name, card)
    else:
        path = save(model, out / name, card)
    print(f"exported {path}.safetensors / .json", file=sys.stderr)
    return path


@click.command("hyperprior")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of training images.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log, export).")
@click.option("--name", default=None, help="Exported model name (default: hyperprior-<variant>).")
@click.option("--variant", type=click.Choice(["mean", "scale"]), default="mean", show_default=True)
@click.option("--N", "N", default=64, show_default=True, type=int, help="Transform channels (and z channels).")
@click.option("--M", "M", default=96, show_default=True, type=int, help="Latent y channels.")
@click.option("--lmbda", default=0.0067, show_default=True, type=float, help="lmbda*255^2*MSE + bpp.")
@click.option("--steps", default=4000, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--crop", default=128, show_default=True, type=int)
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="CPU threads (default: all cores).")
@click.option("--max-minutes", default=None, type=float, help="Stop training after this wall time (minutes).")
@click.option("--eval-data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Measure bpp/PSNR on these images after training (recorded in the model card).")
@click.option("--warmup-steps", default=0, show_default=True, type=int, help="Linear learning-rate warm-up.")
@click.option("--init-from", default=None,
              help="Warm start from a shipped model name or a saved model path (same variant, N, M).")
@click.option("--device", default="cpu", show_default=True, help="Training device (cpu, cuda, cuda:1...).")
@click.option("--half", is_flag=True, help="Export the parameters as float16 (half the file; tables rebuilt).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.* if present.")
def hyperprior_command(data: str, out: str, name: str | None, variant: str, N: int, M: int, lmbda: float,
                       steps: int, batch_size: int, crop: int, lr: float, seed: int, threads: int | None,
                       max_minutes: float | None, eval_data: str | None, warmup_steps: int, init_from: str | None,
                       device: str, half: bool, resume: bool) -> None:
    """Train a scale or mean-scale hyperprior codec and export it with a model card.

    \b
    Example:
      codec train hyperprior --variant mean --N 64 --M 96 --lmbda 0.0067 \\
          --data ../shared/data/images/train --out runs/hp-q2 --name hyperprior-mean-q2
    """
    cfg = HyperpriorTrainConfig(data=data, out=out, name=name, variant=variant, N=N, M=M, lmbda=lmbda, steps=steps,
                                batch_size=batch_size, crop=crop, lr=lr, seed=seed, threads=threads,
                                max_minutes=max_minutes, eval_data=eval_data, warmup_steps=warmup_steps,
                                init_from=init_from, device=device, half=half)
    # The options as typed, after "hyperprior" when run as `codec train hyperprior ...`.
    argv = sys.argv[1:]
    options = argv[argv.index("hyperprior") + 1 :] if "hyperprior" in argv else argv
    command = "codec train hyperprior " + " ".join(shlex.quote(a) for a in options)
    path = train_hyperprior(cfg, resume=resume, command=command)
    click.echo(f"{path}.safetensors")


def _preset_command(fallback: click.Command, preset: str) -> click.Command:
    """``fallback`` (whose first parameter is the preset name) as the sub-command ``preset``."""
    return click.Command(
        preset, params=list(fallback.params[1:]), help=fallback.help, short_help=fallback.short_help,
        callback=functools.partial(fallback.callback, preset=preset),  # type: ignore[arg-type]
    )


def train_group(fallback: click.Command) -> click.Group:
    """The ``codec train`` group: ``hyperprior`` and the other recipes, plus one sub-command per preset of ``fallback``.

    >>> import click
    >>> @click.command("train")
    ... @click.argument("preset", type=click.Choice(["walloc-image"]))
    ... def other(preset): click.echo(preset)
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(train_group(other), ["walloc-image"]).output.strip()
    'walloc-image'
    """
    group = click.Group(name="train", help="Train a codec and export it with a model card.")
    for preset in getattr(fallback.params[0].type, "choices", []):  # codec train walloc-image ...
        group.add_command(_preset_command(fallback, preset))
    group.add_command(hyperprior_command)
    from .train_walloc_audio import walloc_audio_command  # codec train walloc-audio

    group.add_command(walloc_audio_command)
    return group


if __name__ == "__main__":  # python -m neuralcodec.apps.train_hyperprior ... (same as codec train hyperprior)
    hyperprior_command()
