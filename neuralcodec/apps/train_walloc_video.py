"""Training recipe of the WaLLoC video codec: ``codec train walloc-video ...``.

The frame codec (wavelet packet transform, linear encoder, gain, compander, CNN decoder) is
copied, frozen, from a trained WaLLoC image model (``--init-from``, default
``walloc-image-16x``), and so is its entropy model, which becomes the intra model. Training
then fits only the entropy models on **precomputed integer latents** (the encoder runs once
per frame; a step costs a few small convolutions):

* the inter model (a frame's latent given the previous frame's), on pairs of consecutive
  latent frames, random ``crop``×``crop`` latent crops;
* optionally the intra model (``--intra-steps``), on single latent frames.

The loss is the exact code length of the integers under the model (bits per latent).

Training clips: every video in ``--videos`` (frames ``>= --holdout-frames`` only: the first
64 frames of each clip are the benchmark's) and pan/zoom clips synthesised over the photos of
``--images`` (downscaled by at least 2×, Lanczos; smooth random pans and zooms, bicubic
resampling, 8-bit frames). Progress bar, CSV log, resumable checkpoint (safetensors + JSON),
the exported model (``<out>/<name>.safetensors`` + model card).

``codec train walloc-video --images ../shared/data/images/train --videos ../shared/data/video --out runs/walloc-video``

>>> VideoTrainConfig(images="imgs", videos="vids", out="runs/x").holdout_frames
64
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["VideoTrainConfig", "train_walloc_video", "synth_pan_zoom_clip", "walloc_video_command"]


@dataclass
class VideoTrainConfig:
    """Everything a video training run depends on (saved in the checkpoint and the card)."""

    images: str | None
    videos: str | None
    out: str
    name: str = "walloc-video"
    init_from: str = "walloc-image-16x"
    gop: int = 16
    temporal_levels: int = 2
    temporal_hidden: int = 32
    steps: int = 3000  # inter-model steps
    intra_steps: int = 0
    batch_size: int = 16
    crop: int = 32  # latent crop side (x8 pixels)
    lr: float = 2e-3
    decay_at: float = 0.8
    seed: int = 0
    threads: int | None = 1
    holdout_frames: int = 64  # the first frames of every video are never trained on
    max_video_frames: int = 400  # per video file, after the held-out frames
    synth_clips_per_image: int = 2
    synth_frames: int = 16
    synth_size: int = 256
    max_minutes: float | None = None
    log_every: int = 25
    checkpoint_every: int = 250
    device: str = "cpu"  # "cuda" trains the entropy models on the GPU (latents are computed on the CPU)


# -- training clips -------------------------------------------------------------------------------


def synth_pan_zoom_clip(image: Any, frames: int, size: int, rng: Any) -> Any:
    """A ``(3, frames, size, size)`` clip in [0, 1] panning and zooming smoothly over ``image``.

    ``image`` is a ``(H, W, 3)`` uint8 array (at least ``size`` on each side). The camera
    centre moves with a random velocity (up to ~4 px/frame) and a small acceleration; the zoom
    changes by up to ±1% per frame; frames are resampled bicubically and rounded to 8 bits.

    >>> import numpy as np
    >>> img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    >>> synth_pan_zoom_clip(img, 4, 64, np.random.default_rng(0)).shape
    torch.Size([3, 4, 64, 64])
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    src = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    speed = rng.uniform(0, 4.0)
    angle = rng.uniform(0, 2 * math.pi)
    vel = torch.tensor([math.cos(angle), math.sin(angle)]) * speed
    acc = torch.from_numpy(rng.normal(0, 0.15, 2)).float()
    zoom_rate = rng.uniform(-0.01, 0.01) if rng.random() < 0.5 else 0.0
    t = torch.arange(frames, dtype=torch.float32)
    path = vel[None] * t[:, None] + 0.5 * acc[None] * t[:, None] ** 2  # (frames, 2) in pixels (x, y)
    scale = (1 + zoom_rate) ** t  # > 1: zoom in
    # Keep the whole trajectory inside the image (field of view = size / scale pixels).
    half = size / 2 / scale.min()
    lo = path.min(0).values
    hi = path.max(0).values
    span = hi - lo
    room = torch.tensor([w - 2 * half, h - 2 * half]) - span
    if bool((room < 0).any()):
        path = path * 0.0
        room = torch.tensor([w - 2 * half, h - 2 * half]).clamp_min(0)
        lo = torch.zeros(2)
    start = torch.tensor([half, half]) - lo + torch.from_numpy(rng.uniform(0, 1, 2)).float() * room
    centre = start[None] + path  # (frames, 2) pixel coordinates
    # affine_grid maps output [-1, 1] to input [-1, 1] (align_corners=False).
    theta = torch.zeros(frames, 2, 3)
    theta[:, 0, 0] = size / scale / w
    theta[:, 1, 1] = size / scale / h
    theta[:, 0, 2] = 2 * centre[:, 0] / w - 1
    theta[:, 1, 2] = 2 * centre[:, 1] / h - 1
    grid = F.affine_grid(theta, (frames, 3, size, size), align_corners=False)
    out = F.grid_sample(src.expand(frames, -1, -1, -1), grid, mode="bicubic", padding_mode="reflection",
                        align_corners=False)
    out = torch.round(out.clamp(0, 1) * 255) / 255
    return out.transpose(0, 1).contiguous()


def _video_latents(model: Any, path: Path, skip: int, limit: int) -> Any:
    """Integer latents (int8, ``(T, C, h, w)``) of frames ``skip .. skip+limit`` of a video."""
    import torch

    from ..datasets.media import iter_video

    out, t = [], 0
    for chunk in iter_video(path, chunk_frames=16):
        n = chunk.shape[1]
        a, b = max(skip - t, 0), min(skip + limit - t, n)
        if b > a:
            out.append(model.quantized_latents(chunk[:, a:b]).transpose(0, 1).to(torch.int8))
        t += n
        if t >= skip + limit:
            break
    return torch.cat(out) if out else None


def build_latent_clips(model: Any, cfg: VideoTrainConfig, rng: Any, progress: bool = True
                       ) -> tuple[list[tuple[Any, str]], dict[str, Any]]:
    """``(latents, kind)``: integer latent clips ``(T, C, h, w)`` int8 of the training videos
    (kind ``"video"``) and of the synthetic pan/zoom clips (``"synthetic"``)."""
    from ..datasets.images import ImageCropDataset
    from ..datasets.media import VIDEO_SUFFIXES

    clips, summary = [], {"videos": [], "synthetic_clips": 0, "synthetic_frames": 0}
    if cfg.videos:
        files = sorted(p for p in Path(cfg.videos).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        for path in files:
            q = _video_latents(model, path, cfg.holdout_frames, cfg.max_video_frames)
            if q is None or q.shape[0] < 2:
                continue
            clips.append((q, "video"))
            summary["videos"].append({"file": path.name, "frames_used": f"{cfg.holdout_frames}.."
                                      f"{cfg.holdout_frames + q.shape[0] - 1}", "latent": list(q.shape[1:])})
            print(f"video {path.name}: {q.shape[0]} frames (from frame {cfg.holdout_frames})", file=sys.stderr)
    if cfg.images and cfg.synth_clips_per_image > 0:
        import torch

        data = ImageCropDataset(cfg.images, crop=cfg.synth_size, min_downscale=2.0)
        images = [im for im in data.images if min(im.shape[:2]) >= cfg.synth_size + 16]
        it = images
        if progress:
            from tqdm import tqdm

            it = tqdm(images, desc="synth clips", dynamic_ncols=True)
        for im in it:
            for _ in range(cfg.synth_clips_per_image):
                x = synth_pan_zoom_clip(im, cfg.synth_frames, cfg.synth_size, rng)
                clips.append((model.quantized_latents(x).transpose(0, 1).to(torch.int8), "synthetic"))
                summary["synthetic_clips"] += 1
                summary["synthetic_frames"] += cfg.synth_frames
    if not clips:
        raise click.UsageError("no training clips (give --images and/or --videos)")
    return clips, summary


def _sample(clips: list[Any], cfg: VideoTrainConfig, rng: Any, pairs: bool) -> tuple[Any, Any]:
    """A batch of random latent crops: ``(cur, ref)`` consecutive frames (``ref`` None if not ``pairs``).

    ``clips`` are ``(latents, kind)`` pairs; half the crops come from real videos (``kind ==
    "video"``), half from synthetic clips, when both are present.
    """
    import numpy as np
    import torch

    batch_cur, batch_ref = [], []
    c = cfg.crop
    real = [q for q, kind in clips if kind == "video"]
    synth = [q for q, kind in clips if kind != "video"]
    frames_real = np.asarray([q.shape[0] for q in real], dtype=np.float64)
    for _ in range(cfg.batch_size):
        if real and (not synth or rng.random() < 0.5):  # real videos: clips weighted by their length
            q = real[int(rng.choice(len(real), p=frames_real / frames_real.sum()))]
        else:
            q = synth[int(rng.integers(len(synth)))]
        t = int(rng.integers(1 if pairs else 0, q.shape[0]))
        h, w = q.shape[2:]
        ch, cw = min(c, h), min(c, w)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        cur = q[t, :, y:y + ch, x:x + cw]
        if (ch, cw) != (c, c):  # tiny clips: pad with zeros (rare; keeps the batch rectangular)
            cur = torch.nn.functional.pad(cur.float(), (0, c - cw, 0, c - ch)).to(torch.int8)
        batch_cur.append(cur)
        if pairs:
            ref = q[t - 1, :, y:y + ch, x:x + cw]
            if (ch, cw) != (c, c):
                ref = torch.nn.functional.pad(ref.float(), (0, c - cw, 0, c - ch)).to(torch.int8)
            batch_ref.append(ref)
    cur = torch.stack(batch_cur).float()
    return cur, (torch.stack(batch_ref).float() if pairs else None)


# -- the run --------------------------------------------------------------------------------------


def train_walloc_video(cfg: VideoTrainConfig, resume: bool = False, progress: bool = True,
                       command: str | None = None) -> Path:
    """Run (or resume) a training run; returns the exported model's path (no suffix).

    >>> # train_walloc_video(VideoTrainConfig(images="../shared/data/images/train",
    >>> #     videos="../shared/data/video", out="runs/walloc-video", steps=3000))
    """
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from .. import load
    from ..codecs.registry import build
    from .train import RunCheckpoint, RunLog, _atomic_write, device_label, save_half, training_device

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    log_path = out / "log.csv"
    device = training_device(cfg.device)
    lat_path, lat_info_path = out / "latents.safetensors", out / "latents.json"

    image = load(cfg.init_from)
    base_config = {k: image.config[k] for k in ("in_channels", "latent_channels", "levels", "wavelet",
                                                "decoder_channels", "decoder_blocks", "init_step",
                                                "context_levels", "context_hidden", "context_splits")}
    model = build("walloc-video", {**base_config, "temporal_levels": cfg.temporal_levels,
                                   "temporal_hidden": cfg.temporal_hidden, "gop": cfg.gop})
    model.init_from_image_model(image)
    model.name = cfg.name
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    # Latents are computed once per run folder (the frozen encoder), then reused on resume.
    t_lat = time.time()
    if lat_path.is_file() and lat_info_path.is_file():
        tensors = load_file(str(lat_path))
        data_summary = json.loads(lat_info_path.read_text())
        clips = [(tensors[f"clip{i}"], kind) for i, kind in enumerate(data_summary["kinds"])]
    else:
        with torch.no_grad():
            clips, data_summary = build_latent_clips(model, cfg, np.random.default_rng(cfg.seed + 1), progress)
        data_summary["latent_frames"] = int(sum(q.shape[0] for q, _ in clips))
        data_summary["kinds"] = [kind for _, kind in clips]
        _atomic_write(lat_path, lambda p: save_file({f"clip{i}": q.contiguous() for i, (q, _) in enumerate(clips)}, p))
        _atomic_write(lat_info_path, lambda p: Path(p).write_text(json.dumps(data_summary)))
    data_summary["latents_wall_time_s"] = round(time.time() - t_lat, 1)
    print(f"latents: {len(clips)} clips, {data_summary['latent_frames']} frames", file=sys.stderr)

    model.to(device)
    phases = [("inter", model.inter, cfg.steps)] + ([("intra", model.intra, cfg.intra_steps)] if cfg.intra_steps else [])
    params = []
    for _, module, _ in phases:
        for p in module.parameters():
            if p.dtype.is_floating_point:
                p.requires_grad_(True)
                params.append(p)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    step, elapsed = 0, 0.0
    phase_steps = {name: 0 for name, _, _ in phases}  # steps run per phase (all sessions)
    finished: set[str] = set()  # phases that used up their share of --max-minutes
    ckpt = RunCheckpoint(out, {"model": model}, {"optimizer": ("", opt)})
    fresh = not (resume and ckpt.exists())
    if not fresh:
        info = ckpt.restore(rng)
        step, elapsed = info["step"], info["elapsed_s"]
        phase_steps.update(info.get("phase_steps", {}))
        finished = set(info.get("finished", []))

    def checkpoint() -> None:
        ckpt.save(step, elapsed, rng, config=asdict(cfg), phase_steps=phase_steps, finished=sorted(finished))

    total = sum(n for _, _, n in phases)
    history: dict[str, list[float]] = {name: [] for name, _, _ in phases}
    log = RunLog(log_path, ["step", "phase", "bits_per_latent", "lr", "elapsed_s"], fresh, total,
                 sum(phase_steps.values()), "train", progress)
    budget = 60 * cfg.max_minutes if cfg.max_minutes else None
    try:
        share_start = 0.0  # fraction of the budget used up by the earlier phases
        for name, module, n_steps in phases:
            share = n_steps / total  # each phase gets the budget in proportion to its steps
            module.train()
            while phase_steps[name] < n_steps and name not in finished:
                if budget is not None and elapsed >= budget * (share_start + share):
                    finished.add(name)  # this phase's share of the wall-time budget is spent
                    break
                t0 = time.time()
                progress_frac = phase_steps[name] / max(n_steps, 1)
                if budget is not None:
                    progress_frac = max(progress_frac, (elapsed - budget * share_start) / (budget * share))
                lr = cfg.lr * (0.1 if progress_frac >= cfg.decay_at else 1.0)
                for g in opt.param_groups:
                    g["lr"] = lr
                cur, ref = _sample(clips, cfg, rng, pairs=name == "inter")
                cur, ref = cur.to(device), (None if ref is None else ref.to(device))
                lik = module(cur, ref) if name == "inter" else module(cur)
                bits = -torch.log2(lik).mean()
                opt.zero_grad(set_to_none=True)
                bits.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                step += 1
                phase_steps[name] += 1
                elapsed += time.time() - t0
                history[name].append(float(bits.detach()))
                if step % cfg.log_every == 0:
                    log.row([step, name, f"{np.mean(history[name][-cfg.log_every:]):.4f}", lr, f"{elapsed:.1f}"],
                            phase=name, bits=f"{np.mean(history[name][-cfg.log_every:]):.3f}")
                log.tick()
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
            module.eval()
            share_start += share
    finally:
        log.close()
    checkpoint()
    for p in model.parameters():
        p.requires_grad_(False)
    model.cpu().eval()
    model.update()
    card = {
        "description": "WaLLoC video codec: the frozen walloc-image-16x frame codec (WPT + linear encoder + "
                       "compander + CNN decoder, weights copied in) with a temporal entropy model: GOP-first "
                       "frames coded intra, the others given the previous frame's integer latent",
        "training": {
            "command": command or "neuralcodec.apps.train_walloc_video.train_walloc_video(...)",
            "init_from": cfg.init_from,
            "init_from_weights_hash": image.weights_hash(),
            "data": {"images": cfg.images, "videos": cfg.videos,
                     **{k: v for k, v in data_summary.items() if k != "kinds"},
                     "held_out": f"the first {cfg.holdout_frames} frames of every video (the benchmark's) "
                                 "are never trained on"},
            "steps": step,
            "steps_per_phase": phase_steps,
            "config": asdict(cfg),
            "wall_time_s": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "device": device_label(device),
            "final_bits_per_latent_last_100_steps": {k: float(np.mean(v[-100:])) if v else None
                                                     for k, v in history.items()},
        },
    }
    card["training"]["export"] = ("parameters rounded to float16 and stored as float16 (half the file); buffers "
                                  "(coding tables, scale table) exact; every measured result is of the rounded model")
    path = save_half(model, out / cfg.name, card)
    print(f"exported {path}.safetensors / .json", file=sys.stderr)
    return path


@click.command("walloc-video")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False), help="Folder of photos for synthetic pan/zoom clips.")
@click.option("--videos", default=None, type=click.Path(exists=True, file_okay=False), help="Folder of training videos (MP4/AVI/MKV/WebM).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (latents, checkpoints, log, export).")
@click.option("--name", default="walloc-video", show_default=True, help="Exported model name.")
@click.option("--init-from", default="walloc-image-16x", show_default=True, help="WaLLoC image model (name or path) whose frame codec is reused.")
@click.option("--gop", default=16, show_default=True, type=int, help="Default frames per GOP of the exported model.")
@click.option("--temporal-levels", default=2, show_default=True, type=int, help="Lattice levels of the inter model.")
@click.option("--temporal-hidden", default=32, show_default=True, type=int, help="Width of the inter model's nets.")
@click.option("--steps", default=3000, show_default=True, type=int, help="Inter-model steps.")
@click.option("--intra-steps", default=0, show_default=True, type=int, help="Intra-model fine-tuning steps.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--crop", default=32, show_default=True, type=int, help="Latent crop side (8 pixels per latent).")
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int, help="CPU threads.")
@click.option("--holdout-frames", default=64, show_default=True, type=int, help="Skip the first frames of every video (the benchmark's).")
@click.option("--max-minutes", default=None, type=float, help="Stop training after this wall time (split over the phases).")
@click.option("--device", default="cpu", show_default=True, help="Training device (cpu, cuda, cuda:1...).")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint.* if present.")
def walloc_video_command(images: str | None, videos: str | None, out: str, name: str, init_from: str, gop: int,
                         temporal_levels: int, temporal_hidden: int, steps: int, intra_steps: int, batch_size: int,
                         crop: int, lr: float, seed: int, threads: int, holdout_frames: int,
                         max_minutes: float | None, device: str, resume: bool) -> None:
    """Train the WaLLoC video codec's temporal entropy model and export it.

    \b
    Example:
      codec train walloc-video --images ../shared/data/images/train --videos ../shared/data/video \\
          --out runs/walloc-video --steps 3000
    """
    cfg = VideoTrainConfig(images=images, videos=videos, out=out, name=name, init_from=init_from, gop=gop,
                           temporal_levels=temporal_levels, temporal_hidden=temporal_hidden, steps=steps,
                           intra_steps=intra_steps, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
                           threads=threads, holdout_frames=holdout_frames, max_minutes=max_minutes, device=device)
    command = "codec train walloc-video " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    path = train_walloc_video(cfg, resume=resume, command=command)
    click.echo(f"{path}.safetensors")


if __name__ == "__main__":  # python -m neuralcodec.apps.train_walloc_video ... (same as codec train walloc-video)
    walloc_video_command()
