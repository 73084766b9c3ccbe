"""Training loop of the learned codecs, and the ``codec train`` command.

``codec train walloc-image --data ../shared/data/images/train --out runs/walloc-image-16x``
trains a WaLLoC image codec on random crops: loss ``lmbda * 255**2 * MSE + bits per pixel``,
AdamW, a progress bar, a CSV log (``log.csv``), resumable checkpoints (model and optimizer
state in safetensors, step and RNG state in JSON; no pickle) and, at the end, the exported
model (``<out>/<name>.safetensors`` + ``.json`` model card) that :func:`neuralcodec.load` reads.

Also callable from Python:

>>> from neuralcodec.apps.train import TrainConfig
>>> TrainConfig(data="imgs", out="runs/x", steps=10).lmbda
0.015
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["TrainConfig", "train", "train_command", "ARCHITECTURE_PRESETS", "RunCheckpoint", "RunLog",
           "training_device", "device_label", "save_half"]

# Preset name -> (registry architecture, constructor config, default exported model name).
ARCHITECTURE_PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "walloc-image": ("walloc", {"latent_channels": 12, "levels": 3}, "walloc-image-16x"),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in the checkpoint and the model card)."""

    data: str
    out: str
    preset: str = "walloc-image"
    name: str | None = None
    steps: int = 5000
    batch_size: int = 16
    crop: int = 128
    lr: float = 2e-4
    entropy_lr_mult: float = 5.0
    lmbda: float = 0.015
    seed: int = 0
    threads: int | None = None
    min_downscale: float = 2.0
    decay_at: float = 0.85  # fraction of the steps after which the learning rate is divided by 10
    pca_crops: int = 512
    # Second phase: the entropy model alone on the frozen integer latents (exact code lengths).
    entropy_steps: int = 1500
    entropy_lr: float = 2e-3
    entropy_batch: int = 16
    entropy_crop: int = 256
    entropy_pool: int = 3000
    reset_entropy: bool = False  # re-initialise the entropy model before the second phase
    init_from: str | None = None  # start from an exported model (.json) instead of PCA
    log_every: int = 25
    checkpoint_every: int = 250
    model_config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # "cuda" trains on the GPU; the export is always a CPU model


def training_device(name: str) -> torch.device:
    """The ``--device`` of every training recipe, with a clear error where CUDA is missing.

    >>> training_device("cpu")
    device(type='cpu')
    """
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException(f"--device {name}: no CUDA device is available")
    return device


def device_label(device: torch.device) -> str:
    """What a model card records as the training device (the GPU's name, or ``"cpu"``).

    >>> device_label(torch.device("cpu"))
    'cpu'
    """
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def save_half(model: Any, path: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Round ``model``'s parameters to float16 (in place, kept as float32 in memory) and save it
    with :func:`~neuralcodec.codecs.registry.save`, the parameters stored as float16.

    Loading widens them back to float32 exactly, so the weights hash in the card is the loaded
    model's. Buffers (integer coding tables, the scale table) are stored as they are.

    >>> import tempfile, neuralcodec
    >>> from neuralcodec.codecs.walloc_video import WaLLoCVideo
    >>> m = WaLLoCVideo(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=8, temporal_hidden=8)
    >>> p = save_half(m.eval(), tempfile.mkdtemp() + "/tiny")
    >>> neuralcodec.load(str(p) + ".json").weights_hash() == m.weights_hash()
    True
    """
    from ..codecs.registry import save

    names = set()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p.half().float())
            names.add(name)
    model._hash_cache = None
    path = save(model, path, card)
    state = {k: (v.detach().cpu().half() if k in names else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    _atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(state, p))
    return path


def _atomic_write(path: Path, writer) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors (for safetensors) + JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in info["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state().tolist()}


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


class RunCheckpoint:
    """The resumable state of a training run, written atomically and without pickle.

    ``<out>/checkpoint.safetensors`` holds the modules' tensors (``"<prefix>.<name>"``) and the
    optimizers' tensors (``"<tensor prefix>optim.<i>.<name>"``); ``<out>/checkpoint.json`` holds
    the step, the training wall time, the RNG states, each optimizer's scalars under its key, and
    whatever else the recipe passes to :meth:`save` (its config, phase counters...).

    Args:
        out: the run folder.
        modules: ``{prefix: module}`` whose ``state_dict`` is saved and restored.
        optimizers: ``{json key: (tensor prefix, optimizer)}``.

    >>> import tempfile
    >>> net = torch.nn.Linear(2, 2); opt = torch.optim.Adam(net.parameters())
    >>> ckpt = RunCheckpoint(tempfile.mkdtemp(), {"model": net}, {"optimizer": ("", opt)})
    >>> rng = np.random.default_rng(0)
    >>> ckpt.save(step=7, elapsed=1.5, rng=rng, config={"lr": 1e-3})
    >>> info = ckpt.restore(rng, quiet=True)
    >>> info["step"], info["elapsed_s"], info["config"]
    (7, 1.5, {'lr': 0.001})
    """

    def __init__(self, out: str | os.PathLike, modules: dict[str, torch.nn.Module],
                 optimizers: dict[str, tuple[str, torch.optim.Optimizer]]) -> None:
        self.tensors_path = Path(out) / "checkpoint.safetensors"
        self.state_path = Path(out) / "checkpoint.json"
        self.modules = modules
        self.optimizers = optimizers

    def exists(self) -> bool:
        return self.tensors_path.is_file() and self.state_path.is_file()

    def save(self, step: int, elapsed: float, rng: np.random.Generator, **info: Any) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules.items():
            tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
        state: dict[str, Any] = {"step": step, "elapsed_s": elapsed, "rng": _rng_state(rng)}
        for key, (prefix, opt) in self.optimizers.items():
            opt_tensors, state[key] = _optimizer_tensors(opt)
            tensors.update({prefix + k: v for k, v in opt_tensors.items()})
        state.update(info)
        _atomic_write(self.tensors_path, lambda p: save_file(tensors, p))
        _atomic_write(self.state_path, lambda p: Path(p).write_text(json.dumps(state)))

    def restore(self, rng: np.random.Generator, quiet: bool = False) -> dict[str, Any]:
        """Load every module, optimizer and the RNG state; returns the JSON state (``step``,
        ``elapsed_s`` and the recipe's own entries). Modules may already be on a GPU."""
        tensors = load_file(str(self.tensors_path))
        info = json.loads(self.state_path.read_text())
        for prefix, module in self.modules.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        for key, (prefix, opt) in self.optimizers.items():
            _load_optimizer(opt, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, info[key])
        _set_rng_state(rng, info["rng"])
        info["step"], info["elapsed_s"] = int(info["step"]), float(info["elapsed_s"])
        if not quiet:
            print(f"resumed at step {info['step']}", file=sys.stderr)
        return info


class RunLog:
    """The CSV log (``log.csv``) and the progress bar of a training run, opened and closed together.

    A fresh run writes the header; a resumed one appends. :meth:`row` writes (and flushes) a line
    and shows ``postfix`` on the bar; :meth:`tick` advances the bar.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "log.csv"
    >>> with RunLog(path, ["step", "loss"], fresh=True, total=2, progress=False) as log:
    ...     log.row([1, "0.50"], loss="0.50"); log.tick()
    >>> path.read_text().splitlines()
    ['step,loss', '1,0.50']
    """

    def __init__(self, path: str | os.PathLike, header: list[str], fresh: bool, total: int, initial: int = 0,
                 desc: str = "train", progress: bool = True) -> None:
        if fresh:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(header)
        self._file = open(path, "a", newline="")
        self._csv = csv.writer(self._file)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def row(self, values: list[Any], **postfix: str) -> None:
        self._csv.writerow(values)
        self._file.flush()
        if self.bar is not None and postfix:
            self.bar.set_postfix(**postfix)

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        self._file.close()
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * (0.1 if step >= cfg.decay_at * cfg.steps else 1.0)


def _timed_lr_at(cfg: Any, step: int, elapsed_s: float) -> float:
    """Step decay (÷10) at ``cfg.decay_at`` of the run, measured in steps or, with
    ``cfg.max_minutes``, in wall time (the hyperprior and audio recipes)."""
    progress = step / max(cfg.steps, 1)
    if cfg.max_minutes:
        progress = max(progress, elapsed_s / (60 * cfg.max_minutes))
    return cfg.lr * (0.1 if progress >= cfg.decay_at else 1.0)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, command: str | None = None) -> Path:
    """Run (or resume) a training run; returns the path of the exported model (no suffix)."""
    from ..codecs.registry import build, save
    from ..datasets.images import ImageCropDataset

    if cfg.preset not in ARCHITECTURE_PRESETS:
        raise click.BadParameter(f"unknown model preset {cfg.preset!r}; known: {', '.join(ARCHITECTURE_PRESETS)}")
    arch, base_config, default_name = ARCHITECTURE_PRESETS[cfg.preset]
    name = cfg.name or default_name
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    log_path = out / "log.csv"
    device = training_device(cfg.device)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_load = time.time()
    data = ImageCropDataset(cfg.data, crop=cfg.crop, min_downscale=cfg.min_downscale)
    print(f"data: {len(data)} images, {data.pixels / 1e6:.1f} MP after downscaling ({time.time() - t_load:.0f} s)",
          file=sys.stderr)
    model = build(arch, {**base_config, **cfg.model_config}).to(device)
    model.name = name
    entropy_params = [p for n, p in model.named_parameters() if n.startswith("entropy.")]
    other_params = [p for n, p in model.named_parameters() if not n.startswith("entropy.")]
    opt = torch.optim.AdamW(
        [{"params": other_params, "lr_mult": 1.0}, {"params": entropy_params, "lr_mult": cfg.entropy_lr_mult}],
        lr=cfg.lr, weight_decay=0.0,
    )

    step, elapsed = 0, 0.0
    ckpt = RunCheckpoint(out, {"model": model}, {"optimizer": ("", opt)})
    fresh = not (resume and ckpt.exists())
    if not fresh:
        info = ckpt.restore(rng)
        step, elapsed = info["step"], info["elapsed_s"]
    elif cfg.init_from:
        from ..codecs.registry import read_card

        card_path = Path(cfg.init_from)
        read_card(card_path)  # a clear error if it is not a model card
        state = load_file(str(card_path.with_suffix(".safetensors")))
        try:
            model.load_state_dict(state)
        except RuntimeError:
            # A different entropy model (e.g. an earlier version): keep the rest, start it fresh.
            state = {k: v for k, v in state.items() if not k.startswith("entropy.")}
            result = model.load_state_dict(state, strict=False)
            bad = [k for k in result.missing_keys + result.unexpected_keys if not k.startswith("entropy.")]
            if bad:
                raise click.ClickException(f"{cfg.init_from} does not match this model: {bad[:5]}")
            print("initialised all but the entropy model (it differs); the entropy model starts fresh",
                  file=sys.stderr)
        print(f"initialised from {cfg.init_from}", file=sys.stderr)
    else:
        if hasattr(model, "init_from_data") and cfg.pca_crops > 0:
            variances = model.init_from_data(data.sample(cfg.pca_crops, rng).to(device))
            kept = float(variances[: model.latent_channels].sum() / variances.sum())
            print(f"PCA init: {kept:.4f} of the wavelet-domain energy kept", file=sys.stderr)

    def checkpoint() -> None:
        ckpt.save(step, elapsed, rng, config=asdict(cfg))

    model.train()
    recent: list[tuple[float, float, float]] = []
    log = RunLog(log_path, ["step", "loss", "mse", "psnr", "bpp", "lr", "elapsed_s"], fresh, cfg.steps, step,
                 "train", progress)
    try:
        while step < cfg.steps:
            t0 = time.time()
            lr = _lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            x = data.sample(cfg.batch_size, rng).to(device, non_blocking=True)
            out_ = model(x)
            mse = torch.mean((out_["x_hat"] - x) ** 2)
            pixels = x.shape[0] * x.shape[2] * x.shape[3]
            bpp = sum(-torch.log2(l).sum() for l in out_["likelihoods"].values()) / pixels
            loss = cfg.lmbda * 255**2 * mse + bpp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            elapsed += time.time() - t0
            recent.append((float(loss), float(mse), float(bpp)))
            recent = recent[-200:]
            if step % cfg.log_every == 0 or step == cfg.steps:
                m = float(np.mean([r[1] for r in recent[-cfg.log_every:]]))
                b = float(np.mean([r[2] for r in recent[-cfg.log_every:]]))
                l_ = float(np.mean([r[0] for r in recent[-cfg.log_every:]]))
                log.row([step, f"{l_:.5f}", f"{m:.7f}", f"{-10 * math.log10(m):.3f}", f"{b:.4f}", lr, f"{elapsed:.1f}"],
                        psnr=f"{-10 * math.log10(m):.2f}", bpp=f"{b:.3f}")
            log.tick()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
    finally:
        log.close()

    entropy_info = None
    if cfg.entropy_steps > 0 and hasattr(model, "entropy"):
        t_ent = time.time()
        entropy_info = fit_entropy_model(model, data, cfg, rng, progress=progress)
        entropy_info["wall_time_s"] = round(time.time() - t_ent, 1)
        elapsed += entropy_info["wall_time_s"]
    model.cpu().eval()
    if hasattr(model, "update"):
        model.update()
    tail = recent[-200:]
    mse_tail = float(np.mean([r[1] for r in tail])) if tail else float("nan")
    card = {
        "description": "WaLLoC image codec (wavelet packet + linear encoder + context entropy model + CNN decoder)",
        "training": {
            "command": command or "neuralcodec.apps.train.train(...)",
            "data": str(cfg.data),
            "data_images": len(data),
            "data_megapixels_after_downscale": round(data.pixels / 1e6, 2),
            "steps": step,
            "batch_size": cfg.batch_size,
            "crop": cfg.crop,
            "lr": cfg.lr,
            "lmbda": cfg.lmbda,
            "seed": cfg.seed,
            "init_from": cfg.init_from,
            "entropy_phase": entropy_info,
            "wall_time_s": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "device": device_label(device),
            "final_train_metrics_last_200_steps": {
                "mse": mse_tail,
                "psnr": -10 * math.log10(mse_tail) if tail else None,
                "bpp": float(np.mean([r[2] for r in tail])) if tail else None,
                "loss": float(np.mean([r[0] for r in tail])) if tail else None,
            },
        },
    }
    path = save(model, out / name, card)
    print(f"exported {path}.safetensors / .json", file=sys.stderr)
    return path


def fit_entropy_model(model: torch.nn.Module, data: Any, cfg: TrainConfig, rng: np.random.Generator,
                      progress: bool = True) -> dict[str, Any]:
    """Train only ``model.entropy`` on the frozen integer latents of random crops.

    The latents are computed once for a pool of ``entropy_pool`` crops (int8 in memory); the
    loss is the exact code length (bits) of those integers under the model, as coded.
    Returns a summary (steps, final bits per latent) for the model card.
    """
    if cfg.reset_entropy:
        e = model.entropy
        fresh = type(e)(e.nd, e.channels, e.levels, e.hidden, e.splits)
        model.entropy.load_state_dict(fresh.state_dict())
    model.eval()
    pool = []
    with torch.no_grad():
        device = next(model.parameters()).device
        for start in range(0, cfg.entropy_pool, 64):
            x = data.sample(min(64, cfg.entropy_pool - start), rng, crop=cfg.entropy_crop).to(device)
            pool.append(model.quantized_latents(x).to(torch.int8))
    latents = torch.cat(pool)
    params = list(model.entropy.parameters())
    opt = torch.optim.Adam(params, lr=cfg.entropy_lr)
    model.entropy.train()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.entropy_steps, desc="entropy", dynamic_ncols=True)
    history: list[float] = []
    for step in range(cfg.entropy_steps):
        lr = cfg.entropy_lr * (0.1 if step >= 0.8 * cfg.entropy_steps else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(rng.integers(0, len(latents), cfg.entropy_batch)).to(latents.device)
        q = latents[idx].float()
        bits = -torch.log2(model.entropy(q, q)).sum() / q.numel()
        opt.zero_grad(set_to_none=True)
        bits.backward()
        opt.step()
        history.append(float(bits.detach()))
        if bar is not None:
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(bits_per_latent=f"{np.mean(history[-25:]):.3f}")
    if bar is not None:
        bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"steps": cfg.entropy_steps, "lr": cfg.entropy_lr, "batch": cfg.entropy_batch, "crop": cfg.entropy_crop,
            "pool_crops": cfg.entropy_pool, "reset": cfg.reset_entropy,
            "final_bits_per_latent_last_100_steps": float(np.mean(history[-100:])) if history else None}


@click.command("train")
@click.argument("preset", type=click.Choice(sorted(ARCHITECTURE_PRESETS)))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of training images.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log, export).")
@click.option("--name", default=None, help="Exported model name (default: the preset's, e.g. walloc-image-16x).")
@click.option("--steps", default=5000, show_default=True, type=int)
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--crop", default=128, show_default=True, type=int)
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--lmbda", default=0.015, show_default=True, type=float, help="Distortion weight: lmbda*255^2*MSE + bpp.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int, help="CPU threads (default: all cores).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.* if present.")
@click.option("--latent-channels", default=None, type=int, help="Override the preset's latent channels.")
@click.option("--entropy-steps", default=1500, show_default=True, type=int,
              help="Second phase: steps of the entropy model alone on the frozen latents.")
@click.option("--entropy-lr", default=2e-3, show_default=True, type=float)
@click.option("--reset-entropy", is_flag=True, help="Re-initialise the entropy model before the second phase.")
@click.option("--init-from", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Start from an exported model card (.json) instead of the PCA initialisation.")
@click.option("--device", default="cpu", show_default=True, help="Training device (cpu, cuda, cuda:1...).")
def train_command(preset: str, data: str, out: str, name: str | None, steps: int, batch_size: int, crop: int,
                  lr: float, lmbda: float, seed: int, threads: int | None, resume: bool,
                  latent_channels: int | None, entropy_steps: int, entropy_lr: float, reset_entropy: bool,
                  init_from: str | None, device: str) -> None:
    """Train a codec on random crops of a folder of images and export it with a model card.

    \b
    Example:
      codec train walloc-image --data ../shared/data/images/train \\
          --out runs/walloc-image-16x --steps 6000 --lmbda 0.015
    """
    model_config = {"latent_channels": latent_channels} if latent_channels else {}
    cfg = TrainConfig(data=data, out=out, preset=preset, name=name, steps=steps, batch_size=batch_size, crop=crop,
                      lr=lr, lmbda=lmbda, seed=seed, threads=threads, model_config=model_config,
                      entropy_steps=entropy_steps, entropy_lr=entropy_lr, reset_entropy=reset_entropy,
                      init_from=init_from, device=device)
    command = "codec " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    path = train(cfg, resume=resume, command=command)
    click.echo(f"{path}.safetensors")
