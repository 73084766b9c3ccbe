"""Benchmark: forward + inverse 2D wavelet packet transform against pytorch_wavelets (WaLLoC's way).

The peer is built exactly as the reference ``walloc`` package builds its WPT (walloc 1.2.1,
``Codec2D.wavelet_analysis`` / ``wavelet_synthesis``): ``DWTForward(J=1, wave='bior4.4',
mode='periodization')`` applied ``J`` times to all current bands (bands folded into channels with
``einops.rearrange(..., 'b c f h w -> b (c f) h w')``), and ``DWTInverse`` the same way back.
Both run in this process on the same input with the same thread count; we report the median of
several repeats after warm-up, and check that both reconstruct and that they agree.

    python benchmarks/bench_wavelets.py            # 8x3x256x256, J=3, float32, CPU
    python benchmarks/bench_wavelets.py --repeats 20 --threads 1 --no-backward

Also timed (same run): our filter bank one level at a time instead of composed J-level kernels,
and the CDF 9/7 lifting path; and forward+inverse+backward (training use).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import einops
import torch

from neuralcodec.transforms import iwpt, wpt
from neuralcodec.transforms.lifting import iwpt_lifting97, wpt_lifting97


class PeerWPT:
    """WaLLoC's WPT: one pytorch_wavelets DWT level at a time over all bands."""

    def __init__(self, wave: str = "bior4.4"):
        from pytorch_wavelets import DWTForward, DWTInverse

        self.wt = DWTForward(J=1, mode="periodization", wave=wave)
        self.iwt = DWTInverse(mode="periodization", wave=wave)

    def analysis(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        for _ in range(levels):
            low, highs = self.wt(x)
            x = torch.cat([low.unsqueeze(2), highs[0]], dim=2)
            x = einops.rearrange(x, "b c f h w -> b (c f) h w")
        return x

    def synthesis(self, y: torch.Tensor, levels: int) -> torch.Tensor:
        for _ in range(levels):
            y = einops.rearrange(y, "b (c f) h w -> b c f h w", f=4)
            low, highs = torch.split(y, [1, 3], dim=2)
            y = self.iwt((low.squeeze(2), [highs]))
        return y


def round_robin(fns: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per function; the functions take turns so that background load on a
    shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--wavelet", default="bior4.4")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--no-backward", action="store_true", help="skip timing forward+inverse+backward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    torch.manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    x = torch.rand(shape, dtype=torch.float32)
    J, wave = args.levels, args.wavelet
    peer = PeerWPT(wave)

    with torch.no_grad():
        ours_y = wpt(x, J, wave)
        ours_err = (iwpt(ours_y, J, wave) - x).abs().max().item()
        peer_y = peer.analysis(x, J)
        peer_err = (peer.synthesis(peer_y, J) - x).abs().max().item()
        agree = (ours_y - peer_y).abs().max().item()
    print(f"input {tuple(shape)} float32, J={J}, wavelet={wave}, torch threads={threads}")
    print(f"coefficients {tuple(ours_y.shape)}; max |ours - peer| = {agree:.2e}")
    print(f"reconstruction max error: ours {ours_err:.2e}, peer {peer_err:.2e}")

    def ours_fn():
        iwpt(wpt(x, J, wave), J, wave)

    def peer_fn():
        peer.synthesis(peer.analysis(x, J), J)

    def per_level_fn():
        # Same filter bank code, but one level at a time (no composed J-level kernels); the
        # layout is identical because wpt(., 1) on packet channels yields natural order.
        y = x
        for _ in range(J):
            y = wpt(y, 1, wave)
        for _ in range(J):
            y = iwpt(y, 1, wave)

    variants = {"ours": ours_fn, "peer": peer_fn, "ours_per_level": per_level_fn}
    if wave == "bior4.4":
        variants["lifting"] = lambda: iwpt_lifting97(wpt_lifting97(x, J), J)
    with torch.no_grad():
        lifting_err = None
        if wave == "bior4.4":
            lifting_err = (wpt_lifting97(x, J) - ours_y).abs().max().item()
            print(f"lifting vs filter bank coefficients: max diff {lifting_err:.2e}")
        times = round_robin(variants, args.repeats, args.warmup)
    ours_s, peer_s = times["ours"], times["peer"]
    print(f"forward+inverse, median of {args.repeats}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items()))
    print(f"speedup vs pytorch_wavelets (walloc-style): {peer_s / ours_s:.2f}x; "
          f"composed vs per-level: {times['ours_per_level'] / ours_s:.2f}x"
          + (f"; filter bank vs lifting: {times['lifting'] / ours_s:.2f}x" if "lifting" in times else ""))
    result = {
        "benchmark": "wpt2d_forward_inverse",
        "ours_s": ours_s,
        "peer_s": peer_s,
        "speedup": peer_s / ours_s,
        "ours_per_level_s": times["ours_per_level"],
        "lifting_s": times.get("lifting"),
        "peer": "pytorch_wavelets DWTForward/DWTInverse J=1 per level (walloc 1.2.1 style)",
        "shape": list(shape),
        "levels": J,
        "wavelet": wave,
        "dtype": "float32",
        "threads": threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "ours_recon_err": ours_err,
        "peer_recon_err": peer_err,
        "max_abs_diff_ours_vs_peer": agree,
        "max_abs_diff_lifting_vs_ours": lifting_err,
    }

    if not args.no_backward:
        xg = x.clone().requires_grad_(True)

        def ours_bw():
            iwpt(wpt(xg, J, wave), J, wave).square().mean().backward()

        def peer_bw():
            peer.synthesis(peer.analysis(xg, J), J).square().mean().backward()

        bw = round_robin({"ours": ours_bw, "peer": peer_bw}, args.repeats, args.warmup)
        ob, pb = bw["ours"], bw["peer"]
        print(f"forward+inverse+backward median: ours {ob * 1e3:.2f} ms, peer {pb * 1e3:.2f} ms, "
              f"speedup {pb / ob:.2f}x")
        result.update({"ours_fwd_bwd_s": ob, "peer_fwd_bwd_s": pb, "speedup_fwd_bwd": pb / ob})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
