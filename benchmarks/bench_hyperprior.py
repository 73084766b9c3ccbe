"""Benchmark: the shipped hyperprior family on eval24, against JPEG/WebP/JPEG 2000 and CompressAI.

Measured in one process (CPU):

* rate-distortion of the family (default ``hyperprior-mean-q1+q2+q3``) on
  ``../shared/data/images/eval24`` through :func:`neuralcodec.apps.bench.run_rd`: bpp of the
  actual ``.ncf`` bytes, PSNR (RGB, output rounded to 8 bits) and MS-SSIM, with JPEG, WebP and
  JPEG 2000 (Pillow) on the same images in the same run;
* BD-rate of the family against each of the three (PSNR-RGB and MS-SSIM dB; the monotone
  ``pchip`` fit, and the classic cubic fit when every curve has at least 4 points);
* encode / decode time per image of one model (``--timing-model``, default the middle one),
  and the share of it spent in our rANS coder, against CompressAI 1.2.8's own
  ``MeanScaleHyperprior.compress()/decompress()`` of the same network with the same float
  weights (its hyper-synthesis in float, ours in exact fixed point) and its share spent in
  its entropy models' ``compress/decompress`` (C++ rANS plus the ``.tolist()`` conversions it
  does); file sizes of both;
* the coders alone on the *same* symbols, table indexes and integer tables (the ``y``
  latents of every image): our ``rans.encode_with_indexes``/``decode_with_indexes`` against
  ``compressai.ans.RansEncoder/RansDecoder`` (timed with and without the list conversions
  its API needs), and the byte sizes.

    python benchmarks/bench_hyperprior.py
    python benchmarks/bench_hyperprior.py --family hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3 --limit 8
    python benchmarks/bench_hyperprior.py --skip-rd --timing-model all   # coder timing/size of every model only

The eval set is ``$NEURALCODEC_DATA/images/eval24`` or ``../shared/data/images/eval24``; the
benchmark skips with a message when it (or the shipped models) is absent. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from _common import data_root  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FAMILY = "hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3"


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    print(json.dumps({"benchmark": "hyperprior", "skipped": reason}))
    sys.exit(0)


class _Timer:
    """Accumulates the wall time of wrapped calls; a wrapped call made inside another one (e.g.
    ``decode_with_indexes`` calling ``decode_batch``) is not counted twice."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - t0

        return timed


@contextmanager
def _patched(obj: Any, names: list[str], timer: _Timer) -> Iterator[None]:
    saved = {n: getattr(obj, n) for n in names}
    try:
        for n in names:
            setattr(obj, n, timer.wrap(saved[n]))
        yield
    finally:
        for n, fn in saved.items():
            setattr(obj, n, fn)


def _read(path: Path) -> torch.Tensor:
    from neuralcodec.apps.bench import read_image_uint8

    return torch.from_numpy(read_image_uint8(path)).permute(2, 0, 1).float().div(255.0)


def compressai_twin(model: Any) -> Any:
    """CompressAI's ``MeanScaleHyperprior`` with our model's float weights (same layers).

    Our hyper-synthesis uses a leaky ReLU of slope 1/64; the twin uses the same slope.
    """
    from compressai.models import MeanScaleHyperprior

    if model.variant != "mean":
        raise ValueError("the CompressAI comparison is written for the mean-scale variant")
    twin = MeanScaleHyperprior(model.N, model.M)
    twin.h_s[1] = torch.nn.LeakyReLU(1 / 64)
    twin.h_s[3] = torch.nn.LeakyReLU(1 / 64)
    ours = model.state_dict()
    mapped = {}
    for k, v in ours.items():
        if k.startswith("h_s.convs."):
            i, rest = k[len("h_s.convs."):].split(".", 1)
            mapped[f"h_s.{2 * int(i)}.{rest}"] = v
        else:  # tables too (CompressAI's loader sizes its buffers from them); update() rebuilds them
            mapped[k] = v
    missing, unexpected = twin.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not map onto CompressAI's model: missing {missing}, unexpected {unexpected}")
    twin.update(force=True)
    return twin.eval()


def time_codecs(model: Any, files: list[Path]) -> dict[str, Any]:
    """Per-image encode/decode time and coder share: ours vs CompressAI's twin."""
    from neuralcodec.entropy import Container, rans
    from neuralcodec.transforms.wavelets import pad_to_multiple

    twin = compressai_twin(model)
    # One untimed round trip each first: our coder prepares its integer tables on first use (cached
    # after), CompressAI's were built by update() above; neither one-time cost is per-image work.
    with torch.inference_mode():
        warm = _read(files[0])
        model.decompress(model.compress(warm))
        padded, _ = pad_to_multiple(warm.unsqueeze(0), 64)
        strings = twin.compress(padded)
        twin.decompress(strings["strings"], strings["shape"])
    rows = []
    for path in files:
        x = _read(path)
        _, h, w = x.shape
        # ours
        enc_t, dec_t = _Timer(), _Timer()
        with _patched(rans, ["encode_batch", "encode_with_indexes"], enc_t), \
                _patched(rans, ["decode_batch", "decode_with_indexes"], dec_t):
            with torch.inference_mode():
                t0 = time.perf_counter()
                blob = model.compress(x)
                t1 = time.perf_counter()
                out = model.decompress(blob)
                t2 = time.perf_counter()
        sections = Container.from_bytes(blob).sections
        ours = {"encode_s": t1 - t0, "decode_s": t2 - t1, "encode_coder_s": enc_t.seconds,
                "decode_coder_s": dec_t.seconds, "bytes": len(blob),
                "y_bytes": len(sections["y"]), "z_bytes": len(sections["z"])}
        # CompressAI (its own compress/decompress; padded input, cropped output)
        padded, _ = pad_to_multiple(x.unsqueeze(0), 64)
        c_enc, c_dec = _Timer(), _Timer()
        with _patched(twin.entropy_bottleneck, ["compress"], c_enc), \
                _patched(twin.gaussian_conditional, ["compress"], c_enc), \
                _patched(twin.entropy_bottleneck, ["decompress"], c_dec), \
                _patched(twin.gaussian_conditional, ["decompress"], c_dec):
            with torch.inference_mode():
                t0 = time.perf_counter()
                strings = twin.compress(padded)
                t1 = time.perf_counter()
                rec = twin.decompress(strings["strings"], strings["shape"])["x_hat"][0, :, :h, :w]
                t2 = time.perf_counter()
        # z's decode inside compress() is counted as encode work, as CompressAI does it there.
        cai_bytes = sum(len(s[0]) for s in strings["strings"])
        theirs = {"encode_s": t1 - t0, "decode_s": t2 - t1, "encode_coder_s": c_enc.seconds,
                  "decode_coder_s": c_dec.seconds, "bytes": cai_bytes,
                  "y_bytes": len(strings["strings"][0][0]), "z_bytes": len(strings["strings"][1][0])}
        diff = float((out - rec).abs().max())
        rows.append({"file": path.name, "ours": ours, "compressai": theirs, "max_abs_output_diff": diff})
    mean = lambda side, k: float(np.mean([r[side][k] for r in rows]))  # noqa: E731
    summary = {}
    for side in ("ours", "compressai"):
        summary[side] = {k: mean(side, k) for k in rows[0][side]}
        s = summary[side]
        s["encode_coder_share"] = s["encode_coder_s"] / s["encode_s"]
        s["decode_coder_share"] = s["decode_coder_s"] / s["decode_s"]
    o, c = summary["ours"], summary["compressai"]
    summary["ratios"] = {
        "encode_speedup_vs_compressai": c["encode_s"] / o["encode_s"],
        "decode_speedup_vs_compressai": c["decode_s"] / o["decode_s"],
        "encode_coder_speedup_vs_compressai": c["encode_coder_s"] / o["encode_coder_s"],
        "decode_coder_speedup_vs_compressai": c["decode_coder_s"] / o["decode_coder_s"],
        # ours: whole .ncf (container header + CRC); CompressAI: its raw strings only
        "size_ours_ncf_over_compressai_strings": o["bytes"] / c["bytes"],
        # the two rANS streams alone (ours: the container's y and z sections)
        "size_y_ours_over_compressai": o["y_bytes"] / c["y_bytes"],
        "size_z_ours_over_compressai": o["z_bytes"] / c["z_bytes"],
    }
    summary["images"] = len(rows)
    summary["max_abs_output_diff"] = max(r["max_abs_output_diff"] for r in rows)
    return summary


def time_coders_same_symbols(model: Any, files: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Our rANS vs CompressAI's on identical y symbols, table indexes and integer tables."""
    from compressai.ans import RansDecoder, RansEncoder

    from neuralcodec.entropy import rans

    gc = model.gaussian_conditional
    cdfs, lengths, offsets = gc._tables_on("cpu")
    tables = rans.prepare_tables(cdfs, lengths, offsets)
    cdfs_l, lengths_l, offsets_l = cdfs.tolist(), lengths.tolist(), offsets.tolist()
    totals = {k: 0.0 for k in ("ours_enc", "ours_dec", "cai_enc", "cai_dec", "cai_enc_nolist", "cai_dec_nolist")}
    bytes_ours = bytes_cai = symbols = 0
    ideal_bits = 0.0
    for path in files:
        with torch.inference_mode():
            enc = model.encode_latents(_read(path).unsqueeze(0))
        sym, idx = enc["y_symbols"][0].contiguous(), enc["indexes"][0].contiguous()
        symbols += sym.numel()
        best = {k: math.inf for k in totals}
        for _ in range(repeats):
            t0 = time.perf_counter()
            blob = rans.encode_with_indexes(sym, idx, tables)
            t1 = time.perf_counter()
            back = rans.decode_with_indexes(blob, idx, tables)
            t2 = time.perf_counter()
            assert torch.equal(back.view_as(sym), sym)
            best["ours_enc"] = min(best["ours_enc"], t1 - t0)
            best["ours_dec"] = min(best["ours_dec"], t2 - t1)
            t0 = time.perf_counter()
            sym_l, idx_l = sym.reshape(-1).tolist(), idx.reshape(-1).tolist()
            t1 = time.perf_counter()
            s = RansEncoder().encode_with_indexes(sym_l, idx_l, cdfs_l, lengths_l, offsets_l)
            t2 = time.perf_counter()
            idx_l2 = idx.reshape(-1).tolist()
            t3 = time.perf_counter()
            dec = RansDecoder().decode_with_indexes(s, idx_l2, cdfs_l, lengths_l, offsets_l)
            t4 = time.perf_counter()
            torch.tensor(dec, dtype=torch.int32)
            t5 = time.perf_counter()
            assert dec == sym_l
            best["cai_enc"] = min(best["cai_enc"], t2 - t0)
            best["cai_enc_nolist"] = min(best["cai_enc_nolist"], t2 - t1)
            best["cai_dec"] = min(best["cai_dec"], t5 - t2)
            best["cai_dec_nolist"] = min(best["cai_dec_nolist"], t4 - t3)
        for k in totals:
            totals[k] += best[k]
        bytes_ours += len(blob)
        bytes_cai += len(s)
        ideal_bits += rans.ideal_bits(sym, idx, tables)  # escapes' bins only, not their side bits
    n = len(files)
    return {
        "images": n, "symbols_per_image": symbols / n,
        "per_image_s": {k: v / n for k, v in totals.items()},
        "msym_per_s": {k: symbols / v / 1e6 for k, v in totals.items()},
        "encode_speedup_vs_compressai": totals["cai_enc"] / totals["ours_enc"],
        "decode_speedup_vs_compressai": totals["cai_dec"] / totals["ours_dec"],
        "encode_speedup_vs_compressai_without_list_conversion": totals["cai_enc_nolist"] / totals["ours_enc"],
        "decode_speedup_vs_compressai_without_list_conversion": totals["cai_dec_nolist"] / totals["ours_dec"],
        "bytes_ours": bytes_ours, "bytes_compressai": bytes_cai,
        "size_ratio_ours_over_compressai": bytes_ours / bytes_cai,
        "ideal_bytes": ideal_bits / 8,
        "overhead_over_ideal_ours": bytes_ours / (ideal_bits / 8) - 1,
        "overhead_over_ideal_compressai": bytes_cai / (ideal_bits / 8) - 1,
    }


def bd_rates(entries: dict[str, dict], family: str, baselines: list[str]) -> dict[str, Any]:
    from neuralcodec.apps import bdrate
    from neuralcodec.apps.metrics import ms_ssim_db

    def curve(entry: dict, key: str) -> tuple[list[float], list[float]]:
        res = entry["results"]
        vals = res.get(key, [])
        if key == "ms-ssim":
            vals = [ms_ssim_db(v) for v in vals]
        return list(res["bpp"]), list(vals)

    out: dict[str, Any] = {}
    for base in baselines:
        row: dict[str, Any] = {}
        for key in ("psnr-rgb", "ms-ssim"):
            ra, da = curve(entries[base], key)
            rt, dt = curve(entries[family], key)
            for method in ("pchip", "cubic"):
                name = f"bd-rate[{key if key != 'ms-ssim' else 'ms-ssim-db'}]({method})"
                try:
                    row[name] = bdrate.bd_rate(ra, da, rt, dt, method=method)
                except ValueError as e:
                    row[name] = None
                    row.setdefault("notes", []).append(f"{name}: {e}")
            try:
                row[f"bd-psnr[{key}](pchip)"] = bdrate.bd_psnr(ra, da, rt, dt, method="pchip") if key == "psnr-rgb" else None
            except ValueError:
                row[f"bd-psnr[{key}](pchip)"] = None
        out[base] = {k: v for k, v in row.items() if v is not None or k == "notes"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default=DEFAULT_FAMILY, help="'+'-separated shipped model names (one RD curve)")
    ap.add_argument("--label", default="hyperprior-mean")
    ap.add_argument("--baselines", default="jpeg,webp,jpeg2000")
    ap.add_argument("--timing-model", default=None,
                    help="model(s) timed against CompressAI: a name, '+'-separated names or 'all' (default: the middle one)")
    ap.add_argument("--skip-rd", action="store_true", help="only the timing and coder comparisons (no RD run, no BD-rates)")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--timing-images", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_hyperprior"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the neural codecs (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the classical codecs")
    ap.add_argument("--resume", action="store_true", help="reuse the per-file results already in --out")
    ap.add_argument("--update-cards", action="store_true", help="write the measured results into the model cards")
    args = ap.parse_args()

    import neuralcodec
    from neuralcodec.apps.bench import find_media

    eval_dir = data_root() / "images" / "eval24"
    if not eval_dir.is_dir():
        _skip(f"eval set not found: {eval_dir} (set NEURALCODEC_DATA)")
    names = [n for n in args.family.split("+") if n]
    missing = [n for n in names if n not in neuralcodec.available()]
    if missing:
        _skip(f"models not shipped: {', '.join(missing)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    baselines = [b for b in args.baselines.split(",") if b]
    _, paths = find_media(eval_dir, args.limit)
    print(f"data: {eval_dir} ({len(paths)} images); torch threads: {torch.get_num_threads()}")

    if args.skip_rd and args.update_cards:
        ap.error("--update-cards needs the RD run (drop --skip-rd)")
    result: dict[str, Any] = {
        "benchmark": "hyperprior",
        "data": str(eval_dir), "images": len(paths), "threads": torch.get_num_threads(), "device": "cpu",
        "family": names,
    }
    if not args.skip_rd:
        result.update(_rd_part(args, eval_dir, names, baselines))
    if args.timing_model == "all":
        timing_names = names
    elif args.timing_model:
        timing_names = [n for n in args.timing_model.split("+") if n]
    else:
        timing_names = [names[len(names) // 2]]
    timing_files = paths[: args.timing_images]
    per_model = {}
    for timing_name in timing_names:
        per_model[timing_name] = _timing_part(neuralcodec.load(timing_name), timing_name, timing_files)
    # The first timed model under the keys earlier runs used; every model under timing_per_model.
    result["timing_model"] = timing_names[0]
    result["timing"] = per_model[timing_names[0]]["timing"]
    result["coders_same_symbols"] = per_model[timing_names[0]]["coders_same_symbols"]
    result["timing_per_model"] = per_model
    if args.update_cards:
        update_cards(names, result)
    print(json.dumps(result))


def _rd_part(args: argparse.Namespace, eval_dir: Path, names: list[str], baselines: list[str]) -> dict[str, Any]:
    """The RD run of the family and the baselines, and the BD-rates (printed, and returned for the JSON)."""
    from neuralcodec.apps.bench import run_rd

    t0 = time.time()
    summary = run_rd(eval_dir, [*baselines, f"{args.label}={'+'.join(names)}"], args.out, anchor=baselines[0],
                     limit=args.limit, progress=False, jobs=args.jobs, resume=args.resume)
    entries = {label: json.loads(Path(p).read_text()) for label, p in summary["codecs"].items()}
    print(f"RD run: {time.time() - t0:.0f} s, errors: {summary['errors']}")
    fam = entries[args.label]["results"]
    for name, bpp, psnr, msssim in zip(fam["quality"], fam["bpp"], fam["psnr-rgb"], fam["ms-ssim"]):
        print(f"  {name}: {bpp:.4f} bpp  PSNR {psnr:.2f} dB  MS-SSIM {msssim:.4f}")
    bd = bd_rates(entries, args.label, baselines)
    for base, row in bd.items():
        cols = ", ".join(f"{k} {v:+.1f}" for k, v in row.items() if isinstance(v, float))
        print(f"  BD vs {base}: {cols}")
    return {
        "rd": {k: fam[k] for k in ("quality", "bpp", "psnr-rgb", "ms-ssim") if k in fam},
        "baselines_rd": {b: {k: entries[b]["results"].get(k) for k in ("quality", "bpp", "psnr-rgb", "ms-ssim")}
                         for b in baselines},
        "bd_rate_vs": bd,
    }


def _timing_part(model: Any, timing_name: str, timing_files: list[Path]) -> dict[str, Any]:
    """Whole-codec and coder-only timing/size of one model against CompressAI (printed and returned)."""
    from neuralcodec.entropy import rans

    codec_times = time_codecs(model, timing_files)
    o, c, r = codec_times["ours"], codec_times["compressai"], codec_times["ratios"]
    print(f"timing ({timing_name}, {len(timing_files)} images, {torch.get_num_threads()} threads):")
    print(f"  ours:       encode {o['encode_s'] * 1e3:.0f} ms (coder {100 * o['encode_coder_share']:.1f}%), "
          f"decode {o['decode_s'] * 1e3:.0f} ms (coder {100 * o['decode_coder_share']:.1f}%), {o['bytes']:.0f} B")
    print(f"  CompressAI: encode {c['encode_s'] * 1e3:.0f} ms (coder {100 * c['encode_coder_share']:.1f}%), "
          f"decode {c['decode_s'] * 1e3:.0f} ms (coder {100 * c['decode_coder_share']:.1f}%), {c['bytes']:.0f} B")
    print(f"  coder speedup vs CompressAI: encode x{r['encode_coder_speedup_vs_compressai']:.2f}, "
          f"decode x{r['decode_coder_speedup_vs_compressai']:.2f}; size ours/CompressAI "
          f"{r['size_ours_ncf_over_compressai_strings']:.4f} (y stream {r['size_y_ours_over_compressai']:.4f}: "
          f"{o['y_bytes']:.0f} vs {c['y_bytes']:.0f} B, z stream {r['size_z_ours_over_compressai']:.4f}: "
          f"{o['z_bytes']:.0f} vs {c['z_bytes']:.0f} B)")
    print(f"  our CPU rANS loops: {rans.cpu_backend()}")
    coders = time_coders_same_symbols(model, timing_files)
    print(f"  same symbols/tables: encode x{coders['encode_speedup_vs_compressai']:.2f} "
          f"(x{coders['encode_speedup_vs_compressai_without_list_conversion']:.2f} without its list conversion), "
          f"decode x{coders['decode_speedup_vs_compressai']:.2f} "
          f"(x{coders['decode_speedup_vs_compressai_without_list_conversion']:.2f}), "
          f"size ratio {coders['size_ratio_ours_over_compressai']:.5f} (over the ideal size: ours "
          f"{100 * coders['overhead_over_ideal_ours']:+.2f}%, CompressAI {100 * coders['overhead_over_ideal_compressai']:+.2f}%)")
    return {"timing": codec_times, "coders_same_symbols": coders, "cpu_backend": rans.cpu_backend()}


def update_cards(names: list[str], result: dict[str, Any]) -> None:
    """Record the measured eval24 results in each shipped model card (``benchmark_eval24``)."""
    from neuralcodec.codecs.registry import WEIGHTS_DIR

    rd = result["rd"]
    for name in names:
        if name not in rd["quality"]:
            continue  # the model failed on every image: nothing measured to record
        i = rd["quality"].index(name)
        path = WEIGHTS_DIR / f"{name}.json"
        card = json.loads(path.read_text())
        card["benchmark_eval24"] = {
            "command": "python benchmarks/bench_hyperprior.py --update-cards",
            "images": result["images"],
            "bpp_ncf": rd["bpp"][i], "psnr_rgb": rd["psnr-rgb"][i], "ms_ssim": rd["ms-ssim"][i],
            "family_bd_rate_vs": result["bd_rate_vs"],
        }
        if name == result["timing_model"]:
            card["benchmark_eval24"]["timing_cpu"] = result["timing"]
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"updated {path}")


if __name__ == "__main__":
    main()
