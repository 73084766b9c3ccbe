"""Diagnostic: is a hyperprior model limited by its rate or by its transform?

For every model of the family and every eval image, one process measures:

* the codec as shipped: bpp of the actual ``.ncf`` bytes and PSNR (RGB, output rounded to
  8 bits) of ``decompress(compress(x))``;
* the **transform ceiling**: PSNR of ``g_s(g_a(x))`` with the latent left unquantized (same
  padding, crop, clamp and 8-bit rounding). No rate can do better than this with these
  networks, so when JPEG 2000 beats the ceiling the gap is in the transforms (model size and
  training), not in the entropy coding, the hyperprior or the rate point;
* JPEG 2000 (Pillow/OpenJPEG, ``irreversible=True, mct=1``) at the same bpp as the codec on
  that image, by bisection on its compression ratio.

The last line is one JSON object with the per-model means.

    python benchmarks/diag_hyperprior_ceiling.py
    python benchmarks/diag_hyperprior_ceiling.py --family hyperprior-mean-q3 --limit 6

Reads ``$NEURALCODEC_DATA/images/eval24`` or ``../shared/data/images/eval24`` and skips with a
message (exit 0) when it is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import neuralcodec  # noqa: E402
from neuralcodec.apps.baselines import encode_at_bpp  # noqa: E402
from neuralcodec.apps.bench import read_image_uint8  # noqa: E402
from neuralcodec.apps.metrics import psnr  # noqa: E402
from neuralcodec.transforms.wavelets import crop_to, pad_to_multiple  # noqa: E402
from _common import data_root  # noqa: E402  # benchmarks/_common.py

DEFAULT_FAMILY = "hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3"


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8, rounded like the decoder's output."""
    return torch.round(x[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()


@torch.no_grad()
def ceiling(model, x: torch.Tensor) -> np.ndarray:
    """``g_s(g_a(x))`` without quantization, on the padded image, cropped back."""
    padded, _ = pad_to_multiple(x, model.multiple)
    return to_uint8(crop_to(model.synthesis(model.analysis(padded)), x.shape[-2:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default=DEFAULT_FAMILY, help="'+'-separated shipped model names or card paths")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    eval_dir = data_root() / "images" / "eval24"
    files = sorted(eval_dir.glob("*.png"))[: args.limit] if eval_dir.is_dir() else []
    if not files:
        reason = f"no eval images in {eval_dir} (set NEURALCODEC_DATA)"
        print(f"SKIP: {reason}")
        print(json.dumps({"benchmark": "diag_hyperprior_ceiling", "skipped": reason}))
        return 0

    summary = {}
    for name in args.family.split("+"):
        model = neuralcodec.load(name).eval()
        rows = []
        for path in files:
            img = read_image_uint8(path)
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)[None]
            blob = model.compress(x)[0]  # a batch in, one file per image out
            decoded = to_uint8(model.decompress([blob])[0][None])
            bpp = len(blob) * 8 / (img.shape[0] * img.shape[1])
            _, _, j2k = encode_at_bpp("jpeg2000", img, bpp)
            row = {"image": path.name, "bpp": bpp, "psnr": psnr(img, decoded),
                   "ceiling_psnr": psnr(img, ceiling(model, x)), "jpeg2000_psnr": psnr(img, j2k)}
            rows.append(row)
            print(f"{name} {path.name}: {bpp:.4f} bpp  codec {row['psnr']:.2f} dB  ceiling {row['ceiling_psnr']:.2f} dB"
                  f"  jpeg2000 {row['jpeg2000_psnr']:.2f} dB", flush=True)
        mean = {k: statistics.fmean(r[k] for r in rows) for k in ("bpp", "psnr", "ceiling_psnr", "jpeg2000_psnr")}
        mean["images_jpeg2000_above_ceiling"] = sum(r["jpeg2000_psnr"] > r["ceiling_psnr"] for r in rows)
        mean["images"] = len(rows)
        summary[name] = mean
        print(f"{name}: mean {mean['bpp']:.4f} bpp, codec {mean['psnr']:.2f} dB, ceiling {mean['ceiling_psnr']:.2f} dB,"
              f" jpeg2000 at the same bpp {mean['jpeg2000_psnr']:.2f} dB; jpeg2000 above the ceiling on"
              f" {mean['images_jpeg2000_above_ceiling']}/{len(rows)} images", flush=True)
    print(json.dumps({"benchmark": "diag_hyperprior_ceiling", "eval_set": str(eval_dir), "models": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
