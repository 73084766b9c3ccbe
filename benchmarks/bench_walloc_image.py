"""Benchmark: the WaLLoC image codec (walloc-image-16x) on eval24, against its peers.

Measured in one process:

* rate-distortion of ``walloc-image-16x`` on ``../shared/data/images/eval24``: bpp of the
  actual ``.ncf`` bytes (container header and CRC included) and of the entropy-coded latents
  alone, PSNR (RGB, output rounded to 8 bits) and MS-SSIM;
* JPEG, WebP and JPEG 2000 (Pillow; JPEG 2000 with ``irreversible=True, mct=1``) at the
  same bpp, per image (quality found by bisection), with their PSNR and MS-SSIM;
* the size of our entropy-coded latents against the reference package's way of storing the
  *same* integer latents: walloc 1.2.1's mosaic (``latent_to_pil(latent, 8, 3)``: offset by
  128 to uint8, 12 channels tiled 2×2 into an RGB image) saved as lossless WebP (Pillow
  defaults, as the reference does; also at maximum effort ``quality=100, method=6``), and
  the same mosaic in lossless JPEG XL at effort 9 (``imagecodecs``, when installed: the
  strongest classical lossless image coder at hand, as a second peer);
* encode throughput (MP/s, batch of 768×512 images, up to the quantized latents) of ours
  against the reference ``walloc.walloc.Codec2D`` (same J=3, 12 latent channels, 8-bit
  latents, lightweight linear encoder, random weights);
* decode time of one 768×512 image (entropy decoding + synthesis), ours and the reference
  decoder (``Codec2D`` with its released 16x width ``Nd=768``, random weights).

    python benchmarks/bench_walloc_image.py                      # shipped model
    python benchmarks/bench_walloc_image.py --model runs/walloc-image-16x/walloc-image-16x.json
    python benchmarks/bench_walloc_image.py --update-card        # write the results into the card

The eval set is ``$NEURALCODEC_DATA/images/eval24`` or ``../shared/data/images/eval24``; the
benchmark skips with a message when it is absent. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import einops
import numpy as np
import torch
from PIL import Image

from neuralcodec.apps.baselines import encode_at_bpp
from neuralcodec.apps.metrics import ms_ssim, psnr
from neuralcodec.codecs.registry import WEIGHTS_DIR, load
from neuralcodec.entropy import Container
from _common import data_root  # benchmarks/_common.py


def reference_mosaic(q: torch.Tensor) -> np.ndarray:
    """walloc 1.2.1's RGB mosaic of an integer latent ``(12, h, w)``, ``(2h, 2w, 3)`` uint8.

    Same layout as ``walloc.walloc.latent_to_pil(latent, n_bits=8, C=3)``: ``q + 128`` as
    uint8, channels ``(c nh nw)`` tiled into an RGB image ``(nh h) (nw w) c``.
    """
    if q.min() < -128 or q.max() > 127:
        raise ValueError("latent outside the 8-bit range of the reference mosaic")
    n = int(round((q.shape[0] // 3) ** 0.5))
    mosaic = einops.rearrange((q.long() + 128).to(torch.uint8), "(c nh nw) h w -> (nh h) (nw w) c", c=3, nh=n, nw=n)
    return np.ascontiguousarray(mosaic.numpy())


def reference_mosaic_webp_bytes(q: torch.Tensor, method: int | None = None) -> int:
    """Bytes of walloc 1.2.1's lossless-WebP mosaic (:func:`reference_mosaic`) of a latent."""
    buf = io.BytesIO()
    kwargs = {"lossless": True} if method is None else {"lossless": True, "quality": 100, "method": method}
    Image.fromarray(reference_mosaic(q), "RGB").save(buf, format="WEBP", **kwargs)
    return len(buf.getvalue())


def mosaic_jxl_bytes(q: torch.Tensor) -> int | None:
    """Bytes of the same RGB mosaic as :func:`reference_mosaic_webp_bytes` in lossless JPEG XL
    (effort 9, ``imagecodecs``); ``None`` when ``imagecodecs`` (or its JPEG XL codec) is absent."""
    try:
        import imagecodecs
    except ImportError:
        return None
    if not imagecodecs.JPEGXL.available:
        return None
    return len(imagecodecs.jpegxl_encode(reference_mosaic(q), lossless=True, effort=9))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-image-16x", help="shipped name or path to a model card .json")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N eval images")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for everything timed (ours and reference alike)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="images per batch for the encode throughput")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--no-reference", action="store_true", help="skip the walloc package timings")
    ap.add_argument("--update-card", action="store_true", help="write the eval24 results into the model card")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    eval_dir = data_root() / "images" / "eval24"
    files = sorted(eval_dir.glob("*.png")) if eval_dir.is_dir() else []
    if not files:
        print(f"SKIP: eval set not found at {eval_dir} (set NEURALCODEC_DATA)")
        print(json.dumps({"skipped": True, "reason": f"missing {eval_dir}"}))
        return 0
    files = files[: args.limit] if args.limit else files
    codec = load(args.model)
    print(f"model {codec.name} ({sum(p.numel() for p in codec.parameters()) / 1e6:.2f} M params, "
          f"weights {codec.weights_hash()}), {len(files)} images, {args.threads} threads")

    rows = []
    images = []
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        images.append(rgb)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
        blob = codec.compress(x)
        container = Container.from_bytes(blob)
        latent_bytes = sum(len(s) for s in container.sections.values())
        out = codec.decompress(blob)
        dec = torch.round(out * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        q = codec.latents(blob)
        pixels = rgb.shape[0] * rgb.shape[1]
        with torch.no_grad():  # the entropy model's own code length (no coder overhead)
            lik = codec.entropy(q[None].float(), q[None].float())
            model_bits = sum(float(-torch.log2(v).sum()) for v in (lik.values() if isinstance(lik, dict) else [lik]))
        row = {
            "image": path.name,
            "bpp": len(blob) * 8 / pixels,
            "latent_bpp": latent_bytes * 8 / pixels,
            "bits_per_latent": latent_bytes * 8 / q.numel(),
            "model_bits_per_latent": model_bits / q.numel(),
            "psnr": psnr(rgb, dec),
            "ms_ssim": ms_ssim(rgb, dec),
            "latent_bytes": latent_bytes,
            "webp_mosaic_bytes": reference_mosaic_webp_bytes(q),
            "webp_mosaic_max_effort_bytes": reference_mosaic_webp_bytes(q, method=6),
            "jxl_mosaic_bytes": mosaic_jxl_bytes(q),
        }
        if not args.no_baselines:
            for name in ("jpeg", "webp", "jpeg2000"):
                _, data, decoded = encode_at_bpp(name, rgb, row["bpp"])
                row[f"{name}_bpp"] = len(data) * 8 / pixels
                row[f"{name}_psnr"] = psnr(rgb, decoded)
                row[f"{name}_ms_ssim"] = ms_ssim(rgb, decoded)
        rows.append(row)
        extra = "" if args.no_baselines else (
            f" | jpeg {row['jpeg_psnr']:.2f} webp {row['webp_psnr']:.2f} j2k {row['jpeg2000_psnr']:.2f} dB")
        print(f"{path.name:28s} {row['bpp']:.3f} bpp {row['psnr']:.2f} dB ms-ssim {row['ms_ssim']:.4f} "
              f"latents/webp-mosaic {row['latent_bytes'] / row['webp_mosaic_bytes']:.3f}{extra}")

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    summary: dict = {
        "model": codec.name,
        "weights_hash": codec.weights_hash(),
        "images": len(rows),
        "eval_set": "eval24",
        "bpp": mean("bpp"),
        "latent_bpp": mean("latent_bpp"),
        "bits_per_latent": mean("bits_per_latent"),
        "model_bits_per_latent": mean("model_bits_per_latent"),
        "psnr": mean("psnr"),
        "ms_ssim": mean("ms_ssim"),
        "latents_vs_webp_mosaic": sum(r["latent_bytes"] for r in rows) / sum(r["webp_mosaic_bytes"] for r in rows),
        "latents_vs_webp_mosaic_max_effort": sum(r["latent_bytes"] for r in rows)
        / sum(r["webp_mosaic_max_effort_bytes"] for r in rows),
        "webp_mosaic_bits_per_latent": float(np.mean(
            [r["webp_mosaic_bytes"] * 8 / (r["latent_bytes"] * 8 / r["bits_per_latent"]) for r in rows])),
    }
    if all(r["jxl_mosaic_bytes"] is not None for r in rows):
        summary["latents_vs_jxl_mosaic"] = sum(r["latent_bytes"] for r in rows) / sum(r["jxl_mosaic_bytes"] for r in rows)
        summary["jxl_mosaic_vs_webp_mosaic"] = (sum(r["jxl_mosaic_bytes"] for r in rows)
                                                / sum(r["webp_mosaic_bytes"] for r in rows))
    if not args.no_baselines:
        for name in ("jpeg", "webp", "jpeg2000"):
            summary[name] = {"bpp": mean(f"{name}_bpp"), "psnr": mean(f"{name}_psnr"), "ms_ssim": mean(f"{name}_ms_ssim")}
    print(f"\nwalloc-image-16x: {summary['bpp']:.4f} bpp (latents {summary['latent_bpp']:.4f}), "
          f"{summary['psnr']:.2f} dB, MS-SSIM {summary['ms_ssim']:.4f}")
    print(f"bits per latent: coded {summary['bits_per_latent']:.4f}, entropy model's own estimate "
          f"{summary['model_bits_per_latent']:.4f}")
    print(f"entropy-coded latents / reference lossless-WebP mosaic of the same latents: "
          f"{summary['latents_vs_webp_mosaic']:.3f} (max-effort WebP: {summary['latents_vs_webp_mosaic_max_effort']:.3f})")
    if "latents_vs_jxl_mosaic" in summary:
        print(f"entropy-coded latents / lossless JPEG XL (effort 9) of the same mosaic: {summary['latents_vs_jxl_mosaic']:.3f}"
              f" (JPEG XL / WebP mosaic: {summary['jxl_mosaic_vs_webp_mosaic']:.3f})")
    else:
        print("JPEG XL peer skipped: pip install imagecodecs")
    if not args.no_baselines:
        for name in ("jpeg", "webp", "jpeg2000"):
            s = summary[name]
            print(f"{name:9s} at matched rate: {s['bpp']:.4f} bpp, {s['psnr']:.2f} dB, MS-SSIM {s['ms_ssim']:.4f}")

    # ---- speed: encode throughput (to quantized latents) and decode time, 768x512 ---------
    batch = []
    for rgb in images:
        t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
        if t.shape[1:] == (768, 512):
            t = t.transpose(1, 2)  # portrait -> landscape, same pixels
        if t.shape[1:] == (512, 768):
            batch.append(t)
        if len(batch) == args.batch:
            break
    xb = torch.stack(batch)
    mp = xb.shape[0] * xb.shape[2] * xb.shape[3] / 1e6
    ours_enc = timed(lambda: codec.quantized_latents(xb), args.repeats)
    one = codec.compress(xb[0])
    ours_dec = timed(lambda: codec.decompress(one), args.repeats)
    ours_lat = timed(lambda: codec.latents(one), args.repeats)
    blobs = codec.compress(xb)
    ours_lat_batch = timed(lambda: codec.latents(blobs), max(1, args.repeats - 1))
    summary["latents_s_per_image_batched"] = ours_lat_batch / len(blobs)
    summary["encode_mp_per_s"] = mp / ours_enc
    summary["decode_s_768x512"] = ours_dec
    summary["latents_s_768x512"] = ours_lat
    summary["threads"] = args.threads
    print(f"\nours: encode {mp / ours_enc:.1f} MP/s (batch of {xb.shape[0]} 768x512), decode one 768x512 "
          f"{ours_dec * 1000:.0f} ms (entropy decoding alone {ours_lat * 1000:.0f} ms; in a batch of {len(blobs)}: "
          f"{ours_lat_batch / len(blobs) * 1000:.0f} ms per image)")
    if not args.no_reference:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from walloc.walloc import Codec2D

        torch.manual_seed(0)
        ref = Codec2D(channels=3, J=3, Ne=None, Nd=768, latent_dim=12, latent_bits=8, lightweight_encode=True).eval()

        @torch.no_grad()
        def ref_encode():
            return ref.encoder(ref.wavelet_analysis(xb - 0.5, J=3))

        @torch.no_grad()
        def ref_decode():
            y = ref.encoder(ref.wavelet_analysis(xb[:1] - 0.5, J=3))
            return ref.wavelet_synthesis(ref.decoder(y), J=3).clamp(-0.5, 0.5) + 0.5

        ref_enc = timed(ref_encode, args.repeats)
        ref_dec = timed(ref_decode, max(1, args.repeats - 1))
        summary["reference_encode_mp_per_s"] = mp / ref_enc
        summary["encode_speedup_vs_reference"] = ref_enc / ours_enc
        summary["reference_decode_s_768x512"] = ref_dec
        summary["decode_speedup_vs_reference"] = ref_dec / ours_dec
        print(f"reference walloc Codec2D: encode {mp / ref_enc:.1f} MP/s, decode one 768x512 {ref_dec * 1000:.0f} ms "
              f"(random weights, Nd=768)")
        print(f"encode throughput ours/reference: {ref_enc / ours_enc:.2f}x; decode time reference/ours: "
              f"{ref_dec / ours_dec:.2f}x")

    if args.update_card:
        if args.limit:
            print("not updating the card: --limit given (the card holds full eval24 results)")
        else:
            card_path = Path(args.model) if args.model.endswith(".json") else WEIGHTS_DIR / f"{args.model}.json"
            card = json.loads(card_path.read_text())
            card["results"] = {
                "benchmark": "python benchmarks/bench_walloc_image.py",
                "device": f"cpu, {args.threads} threads (shared 2-core machine)",
                "per_image": rows,
                **summary,
            }
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            print(f"wrote results into {card_path}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
