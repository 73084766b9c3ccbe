"""Benchmark the vectorized rANS coder against constriction and CompressAI (one process, same data).

Cases:
  (a) 1e6 symbols coded with the 64 Gaussian tables of CompressAI's default scale table,
      indexes spread over the range, symbols sampled from the matching zero-mean Gaussians;
      constriction codes the same symbols with ``QuantizedGaussian`` and the same scales.
  (b) 1e6 symbols of one 256-entry peaked categorical table (constriction: ``Categorical``).
  (c) CUDA only: decode throughput of a batch of 64 items of 1e6 symbols (case-a data).

CPU timings use ``torch.set_num_threads(1)``; every timing is the median of ``--repeats`` runs
(the minimum is printed too). CompressAI's coder takes Python lists: its ``.tolist()`` /
``torch.tensor`` conversions are excluded from its throughput and reported separately.

    python benchmarks/bench_entropy.py            # prints lines, then one JSON object
    python benchmarks/bench_entropy.py --repeats 3 --symbols 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _timed(fn, repeats: int):
    """(result of the last call, median seconds, min seconds)."""
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), min(times)


def _case_gaussian(n: int, seed: int):
    from compressai.entropy_models import GaussianConditional
    from compressai.models.google import get_scale_table

    scales = get_scale_table()
    gc = GaussianConditional(None)
    gc.update_scale_table(scales)
    gc.update()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(scales), (n,), generator=g).to(torch.int32)
    sym = torch.round(torch.randn(n, generator=g) * scales[idx.long()]).to(torch.int32)
    tables = (gc._quantized_cdf, gc._cdf_length, gc._offset)
    return sym, idx, tables, scales[idx.long()].double().numpy()


def _case_categorical(n: int, seed: int):
    from compressai._CXX import pmf_to_quantized_cdf

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(256) * 2.5
    p = np.exp(logits - logits.max())
    p /= p.sum()
    cdf = pmf_to_quantized_cdf(p.tolist() + [0.0], 16)  # 256 bins + CompressAI's escape bin
    sym = torch.from_numpy(rng.choice(256, size=n, p=p).astype(np.int32))
    idx = torch.zeros(n, dtype=torch.int32)
    tables = (torch.tensor([cdf], dtype=torch.int32), torch.tensor([len(cdf)], dtype=torch.int32), torch.tensor([0], dtype=torch.int32))
    return sym, idx, tables, p


def bench_ours(sym, idx, tables, repeats):
    from neuralcodec.entropy import rans

    t0 = time.perf_counter()
    prepared = rans.prepare_tables(*tables)
    if rans.cpu_backend() == "c":
        prepared.compiled_decoder()  # the compiled decoder's coarse table and bin table
    else:
        prepared.decode_lut()
    prepared.numpy_encoder()  # the CPU encoder's per-(table, symbol) arrays, built once per table set
    prep_s = time.perf_counter() - t0
    blob, enc_s, enc_min = _timed(lambda: rans.encode_with_indexes(sym, idx, prepared), repeats)
    out, dec_s, dec_min = _timed(lambda: rans.decode_with_indexes(blob, idx, prepared), repeats)
    if not torch.equal(out, sym):
        raise SystemExit("ours: round trip failed")
    n = sym.numel()
    ideal = rans.ideal_bits(sym, idx, prepared) / 8
    lanes, _ = rans._read_varint(blob, 1)
    return {
        "bytes": len(blob),
        "ideal_bytes": round(ideal, 1),
        "lanes": lanes,
        "encode_sym_s": n / enc_s,
        "decode_sym_s": n / dec_s,
        "encode_sym_s_best": n / enc_min,
        "decode_sym_s_best": n / dec_min,
        "table_prep_s": prep_s,
        "cpu_backend": rans.cpu_backend(),
    }


def bench_compressai(sym, idx, tables, repeats):
    from compressai.ans import RansDecoder, RansEncoder

    t0 = time.perf_counter()
    args = (sym.tolist(), idx.tolist(), tables[0].tolist(), tables[1].reshape(-1).tolist(), tables[2].reshape(-1).tolist())
    tolist_s = time.perf_counter() - t0
    enc = RansEncoder()
    dec = RansDecoder()
    blob, enc_s, enc_min = _timed(lambda: enc.encode_with_indexes(*args), repeats)
    out, dec_s, dec_min = _timed(lambda: dec.decode_with_indexes(blob, *args[1:]), repeats)
    t0 = time.perf_counter()
    out_t = torch.tensor(out, dtype=torch.int32)
    totensor_s = time.perf_counter() - t0
    if not torch.equal(out_t, sym):
        raise SystemExit("compressai: round trip failed")
    n = sym.numel()
    return {
        "bytes": len(blob),
        "encode_sym_s": n / enc_s,
        "decode_sym_s": n / dec_s,
        "encode_sym_s_best": n / enc_min,
        "decode_sym_s_best": n / dec_min,
        "tolist_s": tolist_s,
        "totensor_s": totensor_s,
        "encode_sym_s_with_conversion": n / (enc_s + tolist_s),
        "decode_sym_s_with_conversion": n / (dec_s + totensor_s),
    }


def bench_constriction(sym, model_args, kind, repeats):
    import constriction

    s = sym.numpy().astype(np.int32)
    n = s.size
    if kind == "gaussian":
        stds = model_args
        means = np.zeros(n)
        lim = int(np.abs(s).max()) + 1
        model = constriction.stream.model.QuantizedGaussian(-max(lim, 2048), max(lim, 2048))
        enc_args, dec_args = (model, means, stds), (model, means, stds)
    else:
        model = constriction.stream.model.Categorical(model_args, perfect=False)
        enc_args, dec_args = (model,), (model, n)

    def encode():
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(s, *enc_args)
        return coder.get_compressed()

    comp, enc_s, enc_min = _timed(encode, repeats)
    out, dec_s, dec_min = _timed(lambda: constriction.stream.stack.AnsCoder(comp).decode(*dec_args), repeats)
    if not np.array_equal(out, s):
        raise SystemExit("constriction: round trip failed")
    return {
        "bytes": int(comp.nbytes),
        "encode_sym_s": n / enc_s,
        "decode_sym_s": n / dec_s,
        "encode_sym_s_best": n / enc_min,
        "decode_sym_s_best": n / dec_min,
    }


def _ratios(ours, peer):
    return {
        "encode_speed": ours["encode_sym_s"] / peer["encode_sym_s"],
        "decode_speed": ours["decode_sym_s"] / peer["decode_sym_s"],
        "size": ours["bytes"] / peer["bytes"],
    }


def bench_cuda(n: int, items: int, repeats: int, device: str = "cuda"):
    """Batch decode throughput on ``device`` (``cpu`` only to check this code path without a GPU)."""
    from neuralcodec.entropy import rans

    sym, idx, tables, _ = _case_gaussian(n, seed=100)
    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    prepared = rans.prepare_tables(*tables, device=dev)
    prepared.decode_lut()
    g = torch.Generator().manual_seed(5)
    sym_list, idx_list = [], []
    for _ in range(items):  # distinct items: rotate the same data by a random amount
        shift = int(torch.randint(0, n, (1,), generator=g))
        sym_list.append(torch.roll(sym, shift).to(dev))
        idx_list.append(torch.roll(idx, shift).to(dev))
    sync()
    blobs, enc_s, _ = _timed(lambda: (rans.encode_batch(sym_list, idx_list, prepared), sync())[0], repeats)

    def decode():
        out = rans.decode_batch(blobs, idx_list, prepared)
        sync()
        return out

    outs, dec_s, dec_min = _timed(decode, repeats)
    ok = all(torch.equal(o, s) for o, s in zip(outs, sym_list))
    same_bytes = blobs[0] == rans.encode_with_indexes(sym_list[0].cpu(), idx_list[0].cpu(), *tables)
    total = n * items
    return {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "items": items,
        "symbols_per_item": n,
        "round_trip_ok": ok,
        "bytes_equal_cpu": same_bytes,
        "encode_sym_s": total / enc_s,
        "decode_sym_s": total / dec_s,
        "decode_sym_s_best": total / dec_min,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cuda-items", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"symbols": args.symbols, "repeats": args.repeats, "threads": 1, "timing": "median of repeats"}
    cases = {
        "a_gaussian64": (_case_gaussian(args.symbols, 0), "gaussian"),
        "b_categorical256": (_case_categorical(args.symbols, 1), "categorical"),
    }
    for name, ((sym, idx, tables, model_args), kind) in cases.items():
        ours = bench_ours(sym, idx, tables, args.repeats)
        cai = bench_compressai(sym, idx, tables, args.repeats)
        con = bench_constriction(sym, model_args, kind, args.repeats)
        entry = {
            "ours": ours,
            "compressai": cai,
            "constriction": con,
            "ours_over_constriction": _ratios(ours, con),
            "ours_over_compressai": _ratios(ours, cai),
            "ours_over_ideal_size": ours["bytes"] / ours["ideal_bytes"],
        }
        result[name] = entry
        print(f"== case {name}: {args.symbols} symbols, ideal {ours['ideal_bytes']:.0f} bytes")
        for label, r in (("ours", ours), ("compressai", cai), ("constriction", con)):
            print(
                f"  {label:12s} encode {r['encode_sym_s'] / 1e6:7.2f} Msym/s  decode {r['decode_sym_s'] / 1e6:7.2f} Msym/s"
                f"  (best {r['encode_sym_s_best'] / 1e6:.2f} / {r['decode_sym_s_best'] / 1e6:.2f})  {r['bytes']} bytes"
            )
        print(
            f"  compressai incl. list conversion: encode {cai['encode_sym_s_with_conversion'] / 1e6:.2f} Msym/s, "
            f"decode {cai['decode_sym_s_with_conversion'] / 1e6:.2f} Msym/s (tolist {cai['tolist_s'] * 1e3:.1f} ms)"
        )
        print(f"  ours: {ours['cpu_backend']} CPU loops, {ours['lanes']} lanes, table preparation {ours['table_prep_s'] * 1e3:.1f} ms (once per table set)")
        for peer in ("constriction", "compressai"):
            r = entry[f"ours_over_{peer}"]
            print(f"  ours/{peer}: encode {r['encode_speed']:.2f}x  decode {r['decode_speed']:.2f}x  size {r['size']:.4f}")
        print(f"  ours/ideal size: {entry['ours_over_ideal_size']:.4f}")
    if torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
        cuda = bench_cuda(args.symbols, args.cuda_items, max(2, args.repeats // 2))
        result["c_cuda_batch"] = cuda
        print(
            f"== case c_cuda_batch on {cuda['device']}: {cuda['items']} x {cuda['symbols_per_item']} symbols: "
            f"decode {cuda['decode_sym_s'] / 1e9:.3f} Gsym/s (best {cuda['decode_sym_s_best'] / 1e9:.3f}), "
            f"encode {cuda['encode_sym_s'] / 1e9:.3f} Gsym/s, round trip {cuda['round_trip_ok']}, bytes equal CPU {cuda['bytes_equal_cpu']}"
        )
    else:
        result["c_cuda_batch"] = None
        print("== case c_cuda_batch: skipped (no CUDA device)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
