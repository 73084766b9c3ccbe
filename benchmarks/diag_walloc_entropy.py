"""Diagnostic: how much could adapting walloc-image-16x's entropy model to the eval images gain?

Two oracles on the integer latents of eval24, both measured in ideal bits (the model's own
code length, ``-log2`` of the bin probabilities; the coder adds about 1% to it):

* **per-image calibration** -- for every image, a mean offset and a scale factor per coding
  stage and latent channel (21 stages x 12 channels x 2 numbers), fitted by Adam on that
  image's own latents. It bounds what sending such a per-image correction could save, before
  paying for the side information;
* **domain transfer** -- the whole context model fine-tuned on the odd-numbered half of
  eval24 (32x32 latent crops, as the trainer), then measured on the even-numbered half. If
  the eval images shared statistics that the training photos lack, the held-out half would
  gain; if it does not, more or other training data is not the lever.

Never ship a model from this script: it fits on the evaluation set on purpose.

    python benchmarks/diag_walloc_entropy.py
    python benchmarks/diag_walloc_entropy.py --limit 8 --calibration-steps 50

Reads ``$NEURALCODEC_DATA/images/eval24`` or ``../shared/data/images/eval24`` and skips with a
message (exit 0) when it is absent. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import neuralcodec  # noqa: E402
from neuralcodec.apps.bench import read_image_uint8  # noqa: E402
from neuralcodec.apps.train_walloc_entropy import _bits, eval_bits  # noqa: E402
from neuralcodec.entropy.gaussian import bin_likelihood  # noqa: E402
from _common import data_root  # noqa: E402  # benchmarks/_common.py


def stage_index(entropy, q: torch.Tensor) -> torch.Tensor:
    """The coding stage of every element of a latent ``(1, C, *S)``."""
    stage = torch.zeros_like(q, dtype=torch.long)
    for s, (mask, _, (a, b)) in enumerate(entropy.stages(q.shape[2:])):
        stage[:, a:b] = torch.where(mask, s, stage[:, a:b])
    return stage


def calibrated_bits(entropy, q: torch.Tensor, steps: int) -> tuple[float, float]:
    """Ideal bits of ``q`` before and after fitting a per-(stage, channel) mean offset and scale."""
    with torch.no_grad():
        mean, scale = entropy.mean_scale(q)
    stage = stage_index(entropy, q)
    channels = q.shape[1]
    key = stage * channels + torch.arange(channels).view(1, channels, *([1] * (q.dim() - 2)))
    n_keys = int(key.max()) + 1
    offset = torch.zeros(n_keys, requires_grad=True)
    log_factor = torch.zeros(n_keys, requires_grad=True)
    opt = torch.optim.Adam([offset, log_factor], lr=0.05)

    def bits() -> torch.Tensor:
        lik = bin_likelihood(q, mean + offset[key], scale * log_factor[key].exp(), entropy.family)
        return -torch.log2(lik.clamp_min(1e-12)).sum()

    before = float(bits())
    for _ in range(steps):
        loss = bits()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return before, min(before, float(bits()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-image-16x")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--calibration-steps", type=int, default=150)
    ap.add_argument("--transfer-steps", type=int, default=120)
    ap.add_argument("--transfer-lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    eval_dir = data_root() / "images" / "eval24"
    files = sorted(eval_dir.glob("*.png"))[: args.limit] if eval_dir.is_dir() else []
    if len(files) < 2:
        reason = f"fewer than 2 eval images in {eval_dir} (set NEURALCODEC_DATA)"
        print(f"SKIP: {reason}")
        print(json.dumps({"benchmark": "diag_walloc_entropy", "skipped": reason}))
        return 0
    codec = neuralcodec.load(args.model).eval()
    latents = []
    for path in files:
        x = torch.from_numpy(np.ascontiguousarray(read_image_uint8(path))).permute(2, 0, 1).float().div(255)[None]
        latents.append(codec.quantized_latents(x)[0].to(torch.int8))
    numel = sum(q.numel() for q in latents)

    # -- per-image calibration oracle --------------------------------------------------------
    total_before = total_after = 0.0
    for path, q in zip(files, latents):
        before, after = calibrated_bits(codec.entropy, q.float()[None], args.calibration_steps)
        total_before += before
        total_after += after
        print(f"{path.name}: {before / q.numel():.4f} -> {after / q.numel():.4f} bits/latent"
              f" ({100 * (after / before - 1):+.2f}%) with a per-image mean offset and scale per stage and channel",
              flush=True)
    calibration = {"bits_per_latent": total_before / numel, "calibrated_bits_per_latent": total_after / numel,
                   "change": total_after / total_before - 1}
    print(f"calibration oracle: {calibration['bits_per_latent']:.4f} -> {calibration['calibrated_bits_per_latent']:.4f}"
          f" bits/latent ({100 * calibration['change']:+.2f}%, side information not counted)", flush=True)

    # -- domain-transfer check ---------------------------------------------------------------
    fit, held = latents[1::2], latents[0::2]
    tuned = copy.deepcopy(codec)
    tuned.entropy.train()
    opt = torch.optim.Adam([p for p in tuned.entropy.parameters() if p.requires_grad], lr=args.transfer_lr)
    rng = random.Random(0)
    crop = 32
    for _ in range(args.transfer_steps):
        q = rng.choice(fit)
        h, w = q.shape[1:]
        i, j = rng.randrange(0, max(h - crop, 0) + 1, 8), rng.randrange(0, max(w - crop, 0) + 1, 8)
        y_bits, z_bits = _bits(tuned, q[:, i:i + crop, j:j + crop].float()[None])
        opt.zero_grad()
        (y_bits + z_bits).backward()
        opt.step()
    transfer = {"fit_half_before": eval_bits(codec, fit), "fit_half_after": eval_bits(tuned, fit),
                "held_out_half_before": eval_bits(codec, held), "held_out_half_after": eval_bits(tuned, held)}
    print(f"transfer: fitted half {transfer['fit_half_before']:.4f} -> {transfer['fit_half_after']:.4f},"
          f" held-out half {transfer['held_out_half_before']:.4f} -> {transfer['held_out_half_after']:.4f} bits/latent")
    print(json.dumps({"benchmark": "diag_walloc_entropy", "model": args.model, "images": len(files),
                      "calibration_oracle": calibration, "domain_transfer": transfer}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
