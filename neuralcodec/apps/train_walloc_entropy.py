"""Train a new entropy model for a trained WaLLoC image codec, keeping its encoder and decoder.

``codec train walloc-image-entropy --init-from walloc-image-16x --data ../shared/data/images/train
--out runs/walloc-image-16x-cc`` builds the same codec with ``entropy_model="channel_checkerboard"``
(:class:`~neuralcodec.codecs.channel_context.ChannelCheckerboardModel`), copies every weight
but the entropy model's (so the integer latents, and everything trained on them, stay the
same), and trains only the entropy model on the integer latents of the training images:

* the latents of every training image (downscaled by at least ``min_downscale``, as
  ``codec train walloc-image`` does) and of its mirror image are computed once (int8 in
  memory); no image network runs during training;
* each step takes random ``crop``×``crop`` windows of those latents; the loss is the code
  length (bits per latent) of the integers plus the side information, as coded;
* Adam, step decay ÷10 at ``decay_at`` of the run (in steps or, with ``max_minutes``, wall
  time), a progress bar, a CSV log, resumable checkpoints (safetensors + JSON, no pickle),
  and optionally the bits per latent on an eval folder of whole images.

The export is ``<out>/<name>.safetensors`` + ``.json`` (model card with the command, data and
results), loadable with :func:`neuralcodec.load`.

>>> EntropyTrainConfig(data="imgs", out="runs/x").crop
32
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from safetensors.torch import load_file

__all__ = ["EntropyTrainConfig", "train_entropy", "walloc_image_entropy_command", "image_latents", "grow_state",
           "refine_chunks_state"]


@dataclass
class EntropyTrainConfig:
    """Everything an entropy-model run depends on (saved in the checkpoint and the model card)."""

    data: str
    out: str
    init_from: str = "walloc-image-16x"
    name: str | None = None
    steps: int = 3000
    batch_size: int = 16
    crop: int = 32  # latent positions (x8 pixels at J=3)
    lr: float = 1e-3
    decay_at: float = 0.8
    seed: int = 0
    threads: int | None = 1
    max_minutes: float | None = None
    min_downscale: float = 2.0
    eval_data: str | None = None
    eval_every: int = 500
    entropy_model: str = "hierarchical_exact"
    init_entropy: bool = True  # hierarchical_exact: start from the base model's (float) entropy weights
    log_every: int = 25
    checkpoint_every: int = 250
    entropy_config: dict[str, Any] = field(default_factory=dict)  # e.g. {"family": "laplace"}
    context_hidden: int | None = None  # hierarchical_exact: widen the base's context nets to this
    context_splits: list[int] | None = None  # hierarchical_exact: finer channel chunks than the base's
    device: str = "cpu"  # "cuda" trains on the GPU; latents are computed on the CPU, the export is a CPU model


def image_latents(codec: Any, images: list[np.ndarray], flips: bool = True) -> list[torch.Tensor]:
    """Integer latents (int8, ``(C, h, w)``) of uint8 ``(H, W, 3)`` images (and their mirrors).

    >>> import numpy as np
    >>> from neuralcodec.codecs.walloc import WaLLoC
    >>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1).eval()
    >>> [tuple(q.shape) for q in image_latents(codec, [np.zeros((16, 24, 3), np.uint8)])]
    [(4, 4, 6), (4, 4, 6)]
    """
    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)[None]
            for flip in ((False, True) if flips else (False,)):
                q = codec.quantized_latents(x.flip(-1) if flip else x)[0]
                out.append(q.to(torch.int8))
    return out


def _bits(model: Any, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lik = model.entropy(q, q)
    if not isinstance(lik, dict):  # no side information
        return -torch.log2(lik).sum(), q.new_zeros(())
    return -torch.log2(lik["y"]).sum(), -torch.log2(lik["z"]).sum()


@torch.no_grad()
def eval_bits(model: Any, latents: list[torch.Tensor]) -> float:
    """Bits per latent of whole latents under the entropy model (eval mode: rounded ``z``)."""
    was = model.entropy.training
    model.entropy.eval()
    total, count = 0.0, 0
    for q in latents:
        y, z = _bits(model, q.float()[None])
        total += float(y + z)
        count += q.numel()
    model.entropy.train(was)
    return total / max(count, 1)


def grow_state(base: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base`` embedded in the (wider) shapes of ``target``, computing the same function.

    A context net widened from ``h`` to ``h' > h`` hidden units keeps the trained weights in
    the first ``h`` rows/columns; the new units keep ``target``'s fresh initialisation as
    inputs (rows) but enter every later layer with zero weight (new input columns are 0),
    so the widened model starts exactly where the base ended and training grows the new
    units from there. Tensors whose shapes already match are taken as they are.

    >>> base = {"w1": torch.ones(2, 3), "w2": torch.ones(1, 2)}
    >>> grown = grow_state(base, {"w1": torch.full((4, 3), 7.0), "w2": torch.full((1, 4), 7.0)})
    >>> grown["w1"][:, 0].tolist(), grown["w2"].tolist()
    ([1.0, 1.0, 7.0, 7.0], [[1.0, 1.0, 0.0, 0.0]])
    """
    out = {}
    for key, value in base.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            out[key] = value
            continue
        if want.dim() != value.dim() or any(w < v for w, v in zip(want.shape, value.shape)):
            raise click.ClickException(f"cannot widen {key} from {tuple(value.shape)} to {tuple(want.shape)}")
        grown = want.detach().clone()
        if grown.dim() > 1 and grown.shape[1] > value.shape[1]:
            grown[:, value.shape[1]:] = 0  # new inputs: silent until trained
        grown[tuple(slice(0, n) for n in value.shape)] = value
        out[key] = grown
    return out


def refine_chunks_state(base: dict[str, torch.Tensor], base_chunks: list[tuple[int, int]],
                        chunks: list[tuple[int, int]], groups: int, prefix: str = "entropy.nets."
                        ) -> dict[str, torch.Tensor]:
    """Stage nets of a hierarchical context model re-cut to finer channel ``chunks``, same function.

    Each new chunk lies inside a base chunk; its net starts as the base chunk's net: the same
    hidden layers, the output rows of its own channels, and zero weights on the earlier
    channels it may now read (``conv_prior`` inputs the base net did not have). So the model
    starts with the base's code lengths, and training teaches it to use the extra context.
    The first chunk of the coarse lattice has no net (per-channel constants) and cannot be cut.

    >>> net = {"conv1.weight": torch.ones(1, 3, 3, 3), "conv1.bias": torch.zeros(1), "conv2.weight":
    ...        torch.ones(1, 1, 3, 3), "conv2.bias": torch.zeros(1), "conv_prior.weight": torch.ones(1, 1, 3, 3),
    ...        "conv_prior.bias": torch.zeros(1), "out.weight": torch.ones(4, 1, 1, 1), "out.bias": torch.arange(4.0)}
    >>> state = {"entropy.nets.0." + k: v for k, v in net.items()}
    >>> new = refine_chunks_state(state, [(0, 1), (1, 3)], [(0, 1), (1, 2), (2, 3)], groups=1)
    >>> new["entropy.nets.0.out.bias"].tolist(), new["entropy.nets.1.out.bias"].tolist()
    ([0.0, 2.0], [1.0, 3.0])
    """
    def stage_list(ch: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(g, c) for g in range(groups) for c in range(len(ch)) if (g, c) != (0, 0)]

    if chunks[0][1] != base_chunks[0][1] and groups:
        raise click.ClickException("the first channel chunk has no net on the coarse lattice and cannot be split")
    old_index = {gc: i for i, gc in enumerate(stage_list(base_chunks))}
    out = {k: v for k, v in base.items() if not k.startswith(prefix)}
    for i, (g, c) in enumerate(stage_list(chunks)):
        a, b = chunks[c]
        parent = [k for k, (pa, pb) in enumerate(base_chunks) if pa <= a and b <= pb]
        if not parent:
            raise click.ClickException(f"channel chunk {chunks[c]} does not lie inside one of {base_chunks}")
        pa, pb = base_chunks[parent[0]]
        src = f"{prefix}{old_index[(g, parent[0])]}."
        dst = f"{prefix}{i}."
        for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
            out[dst + name] = base[src + name].clone()
        hidden = base[src + "conv1.weight"].shape[0]
        kernel = base[src + "conv1.weight"].shape[2:]
        if a:  # earlier channels at the same positions: the base's (pa of them), the rest silent
            w = base[src + "conv1.weight"].new_zeros((hidden, a, *kernel))
            bias = base[src + "conv1.bias"].new_zeros(hidden)
            if pa:
                w[:, :pa] = base[src + "conv_prior.weight"]
                bias = base[src + "conv_prior.bias"].clone()
            out[dst + "conv_prior.weight"], out[dst + "conv_prior.bias"] = w, bias
        width = pb - pa
        rows = list(range(a - pa, b - pa)) + [width + r for r in range(a - pa, b - pa)]
        out[dst + "out.weight"] = base[src + "out.weight"][rows].clone()
        out[dst + "out.bias"] = base[src + "out.bias"][rows].clone()
    return out


def _build(cfg: EntropyTrainConfig) -> tuple[Any, dict[str, Any]]:
    from ..codecs.registry import build, read_card

    card = read_card(cfg.init_from)
    if card.get("architecture") != "walloc":
        raise click.ClickException(f"{cfg.init_from} is not a WaLLoC image model")
    path = Path(cfg.init_from)
    weights = path.with_suffix(".safetensors") if path.suffix in (".json", ".safetensors") else None
    if weights is None:
        from ..codecs.registry import WEIGHTS_DIR

        weights = WEIGHTS_DIR / f"{cfg.init_from}.safetensors"
    config = {k: v for k, v in card["config"].items() if k not in ("entropy_model", "entropy_config")}
    base_family = (card["config"].get("entropy_config") or {}).get("family", "gaussian")
    if cfg.entropy_model == "channel_checkerboard":
        model = build("walloc", {**config, "entropy_model": cfg.entropy_model, "entropy_config": cfg.entropy_config})
        model.config["entropy_config"] = dict(model.entropy.config)  # every argument, defaults included
    elif cfg.entropy_model == "hierarchical_exact":
        family = cfg.entropy_config.get("family", base_family)
        if cfg.context_hidden is not None:
            config["context_hidden"] = cfg.context_hidden
        if cfg.context_splits is not None:
            config["context_splits"] = list(cfg.context_splits)
        try:
            model = build("walloc", {**config, "entropy_model": cfg.entropy_model,
                                     "entropy_config": {"family": family} if family != "gaussian" else {}})
        except ValueError as e:  # e.g. channel splits out of order or out of range
            raise click.ClickException(str(e)) from None
    else:
        raise click.ClickException(f"unknown entropy model {cfg.entropy_model!r}")
    state = load_file(str(weights))
    same_entropy = card["config"].get("entropy_model", "hierarchical") in ("hierarchical", "hierarchical_exact")
    keep_entropy = cfg.entropy_model == "hierarchical_exact" and cfg.init_entropy and same_entropy
    if not keep_entropy:
        state = {k: v for k, v in state.items() if not k.startswith("entropy.")}
    else:
        # The coding tables follow the model's own family (built by its update()), not the base's.
        state = {k: v for k, v in state.items() if k.split(".")[-1] not in ("_cdfs", "_cdf_lengths", "_offsets")}
        if cfg.context_splits is not None:
            from ..codecs.walloc import channel_chunks, coding_groups

            base_chunks = channel_chunks(model.latent_channels, card["config"].get("context_splits"))[1]
            groups = len(coding_groups((1,) * model.nd, model.entropy.levels))
            state = refine_chunks_state(state, base_chunks, model.entropy.chunks, groups)
        state = grow_state(state, model.state_dict())
    result = model.load_state_dict(state, strict=False)
    bad = [k for k in result.missing_keys + result.unexpected_keys if not k.startswith("entropy.")]
    if bad:
        raise click.ClickException(f"{cfg.init_from} does not match a WaLLoC of its own config: {bad[:5]}")
    return model, card


def train_entropy(cfg: EntropyTrainConfig, resume: bool = False, progress: bool = True,
                  command: str | None = None) -> Path:
    """Run (or resume) an entropy-model run; returns the path of the exported model (no suffix)."""
    from ..codecs.registry import save
    from ..datasets.images import ImageCropDataset
    from .train import RunCheckpoint, RunLog, device_label, training_device

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = training_device(cfg.device)  # before computing latents: a missing GPU fails at once
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model, base_card = _build(cfg)
    model.name = cfg.name or base_card.get("name", "walloc-image")
    model.eval()
    t0 = time.time()
    m = model.multiple
    data = ImageCropDataset(cfg.data, crop=cfg.crop * m, min_downscale=cfg.min_downscale)
    latents = image_latents(model, data.images)
    eval_latents = []
    if cfg.eval_data:
        from PIL import Image

        files = sorted(p for p in Path(cfg.eval_data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        eval_latents = image_latents(model, [np.asarray(Image.open(p).convert("RGB")) for p in files], flips=False)
    print(f"latents of {len(data)} images (+ mirrors): {sum(q.numel() for q in latents) / 1e6:.1f} M values "
          f"({time.time() - t0:.0f} s)", file=sys.stderr)
    model.to(device)
    latents = [q.to(device) for q in latents]
    eval_latents = [q.to(device) for q in eval_latents]
    areas = np.array([(q.shape[1] - cfg.crop + 1) * (q.shape[2] - cfg.crop + 1) for q in latents], dtype=np.float64)
    weights = areas / areas.sum()

    ent = model.entropy
    main_params = [p for n, p in ent.named_parameters() if not n.endswith("quantiles")]
    aux_params = [p for n, p in ent.named_parameters() if n.endswith("quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params or [torch.zeros(1, requires_grad=True)], lr=1e-3)
    start_eval = eval_bits(model, eval_latents) if eval_latents else None
    if start_eval is not None:
        print(f"eval bits per latent at the start: {start_eval:.4f}", file=sys.stderr)
    log_path = out / "log.csv"
    ckpt = RunCheckpoint(out, {"entropy": ent}, {"opt": ("opt.", opt), "aux": ("aux.", aux_opt)})
    step, elapsed = 0, 0.0
    fresh = not (resume and ckpt.exists())
    if not fresh:
        info = ckpt.restore(rng)
        step, elapsed = info["step"], info["elapsed_s"]

    def checkpoint() -> None:
        ckpt.save(step, elapsed, rng, config=asdict(cfg))

    def sample() -> torch.Tensor:
        which = rng.choice(len(latents), size=cfg.batch_size, p=weights)
        out_ = torch.empty((cfg.batch_size, model.latent_channels, cfg.crop, cfg.crop), device=device)
        for i, k in enumerate(which):
            q = latents[k]
            top = int(rng.integers(0, q.shape[1] - cfg.crop + 1))
            left = int(rng.integers(0, q.shape[2] - cfg.crop + 1))
            out_[i] = q[:, top : top + cfg.crop, left : left + cfg.crop].float()
        return out_

    ent.train()
    recent: list[tuple[float, float]] = []
    last_eval = float("nan")
    log = RunLog(log_path, ["step", "bits_per_latent", "z_bits_per_latent", "eval_bits_per_latent", "lr", "elapsed_s"],
                 fresh, cfg.steps, step, "entropy", progress)
    try:
        while step < cfg.steps:
            if cfg.max_minutes and elapsed >= 60 * cfg.max_minutes:
                print(f"time limit reached at step {step}", file=sys.stderr)
                break
            t_step = time.time()
            progress_frac = step / cfg.steps
            if cfg.max_minutes:
                progress_frac = max(progress_frac, elapsed / (60 * cfg.max_minutes))
            lr = cfg.lr * (0.1 if progress_frac >= cfg.decay_at else 1.0)
            for g in opt.param_groups:
                g["lr"] = lr
            q = sample()
            y_bits, z_bits = _bits(model, q)
            loss = (y_bits + z_bits) / q.numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main_params, 5.0)
            opt.step()
            if aux_params:
                aux = ent.aux_loss()
                aux_opt.zero_grad(set_to_none=True)
                aux.backward()
                aux_opt.step()
            step += 1
            elapsed += time.time() - t_step
            recent.append((float(loss.detach()), float(z_bits.detach()) / q.numel()))
            recent = recent[-200:]
            if eval_latents and (step % cfg.eval_every == 0 or step == cfg.steps):
                last_eval = eval_bits(model, eval_latents)
            if step % cfg.log_every == 0 or step == cfg.steps:
                b = float(np.mean([r[0] for r in recent[-cfg.log_every:]]))
                zb = float(np.mean([r[1] for r in recent[-cfg.log_every:]]))
                log.row([step, f"{b:.4f}", f"{zb:.4f}", f"{last_eval:.4f}", lr, f"{elapsed:.1f}"],
                        bits=f"{b:.3f}", z=f"{zb:.3f}", eval=f"{last_eval:.3f}")
            log.tick()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
    finally:
        log.close()
    checkpoint()
    model.cpu().eval()
    model.update()
    eval_latents = [q.cpu() for q in eval_latents]
    final_eval = eval_bits(model, eval_latents) if eval_latents else None
    tail = recent[-200:]
    card = {
        "description": base_card.get("description", "WaLLoC image codec").split("; entropy model")[0]
        + f"; entropy model: {cfg.entropy_model} (exact integer arithmetic, batch-exact coding)",
        "training": {
            "base_model": {"name": base_card.get("name"), "weights_hash": base_card.get("weights_hash"),
                           "training": base_card.get("training")},
            "entropy_model": {
                "command": command or "neuralcodec.apps.train_walloc_entropy.train_entropy(...)",
                "data": str(cfg.data),
                "data_images": len(data),
                "data_latent_values": int(sum(q.numel() for q in latents)),
                "steps": step,
                "batch_size": cfg.batch_size,
                "crop_latents": cfg.crop,
                "lr": cfg.lr,
                "seed": cfg.seed,
                "wall_time_s": round(elapsed, 1),
                "threads": torch.get_num_threads(),
                "device": device_label(device),
                "final_train_bits_per_latent_last_200_steps": float(np.mean([r[0] for r in tail])) if tail else None,
                "eval_data": cfg.eval_data,
                "eval_bits_per_latent_ideal_at_start": start_eval,
                "eval_bits_per_latent_ideal": final_eval,
                "entropy_model": cfg.entropy_model,
                "init_entropy_from_base": cfg.entropy_model == "hierarchical_exact" and cfg.init_entropy,
                "entropy_config": cfg.entropy_config,
                "context_hidden": model.config.get("context_hidden"),
                "context_splits": model.config.get("context_splits"),
                "base_context_hidden": base_card.get("config", {}).get("context_hidden"),
            },
        },
    }
    path = save(model, out / model.name, card)
    print(f"exported {path}.safetensors / .json", file=sys.stderr)
    return path


@click.command("walloc-image-entropy")
@click.option("--init-from", default="walloc-image-16x", show_default=True,
              help="Trained WaLLoC image model (shipped name or model card .json) whose encoder/decoder are kept.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of training images.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log, export).")
@click.option("--name", default=None, help="Exported model name (default: the base model's).")
@click.option("--steps", default=3000, show_default=True, type=int)
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--crop", default=32, show_default=True, type=int, help="Latent crop side (x8 pixels at J=3).")
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--max-minutes", default=None, type=float, help="Wall-time budget (the lr decay follows it).")
@click.option("--eval-data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Folder of whole images: bits per latent reported every --eval-every steps.")
@click.option("--eval-every", default=500, show_default=True, type=int)
@click.option("--entropy-model", default="hierarchical_exact", show_default=True,
              type=click.Choice(["hierarchical_exact", "channel_checkerboard"]),
              help="hierarchical_exact: the base model's context model in exact fixed point, fine-tuned from its "
                   "weights; channel_checkerboard: hyperprior + channel groups + checkerboard, trained from scratch.")
@click.option("--hidden", default=None, type=int,
              help="Width of the stage nets (channel_checkerboard: default 48; hierarchical_exact: default the base's; "
                   "a larger value widens the base's nets, starting from the same function).")
@click.option("--splits", default=None,
              help="hierarchical_exact: channel chunk boundaries, e.g. 2,4,6,9, refining the base's (default: the base's).")
@click.option("--family", default=None, type=click.Choice(["gaussian", "laplace"]),
              help="hierarchical_exact: distribution of a latent given its mean and scale (default: the base's).")
@click.option("--device", default="cpu", show_default=True, help="Training device (cpu, cuda...).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.* if present.")
def walloc_image_entropy_command(init_from: str, data: str, out: str, name: str | None, steps: int, batch_size: int,
                                 crop: int, lr: float, seed: int, threads: int, max_minutes: float | None,
                                 eval_data: str | None, eval_every: int, entropy_model: str, hidden: int | None,
                                 splits: str | None, family: str | None, device: str, resume: bool) -> None:
    """Retrain only the entropy model of a WaLLoC image codec (encoder and decoder kept).

    \b
    Example:
      codec train walloc-image-entropy --init-from walloc-image-16x \\
          --data ../shared/data/images/train --out runs/walloc-image-16x-cc --steps 3000
    """
    if entropy_model == "channel_checkerboard" and (family or splits):
        raise click.UsageError("--family and --splits apply to --entropy-model hierarchical_exact")
    try:
        context_splits = [int(v) for v in splits.split(",")] if splits else None
    except ValueError:
        raise click.BadParameter(f"expected comma-separated channel indexes such as 2,4,6,9, got {splits!r}",
                                 param_hint="--splits") from None
    cfg = EntropyTrainConfig(data=data, out=out, init_from=init_from, name=name, steps=steps, batch_size=batch_size,
                             crop=crop, lr=lr, seed=seed, threads=threads, max_minutes=max_minutes,
                             eval_data=eval_data, eval_every=eval_every, entropy_model=entropy_model,
                             entropy_config=({"hidden": hidden or 48} if entropy_model == "channel_checkerboard"
                                             else {"family": family} if family else {}),
                             context_hidden=hidden if entropy_model == "hierarchical_exact" else None,
                             context_splits=context_splits, device=device)
    args = [a for a in sys.argv[1:] if a not in ("train", "walloc-image-entropy")]
    command = "codec train walloc-image-entropy " + " ".join(shlex.quote(a) for a in args)
    path = train_entropy(cfg, resume=resume, command=command)
    click.echo(f"{path}.safetensors")


if __name__ == "__main__":  # python -m neuralcodec.apps.train_walloc_entropy ...
    walloc_image_entropy_command()
