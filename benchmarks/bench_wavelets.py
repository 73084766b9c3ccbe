"""Benchmark: forward + inverse 2D wavelet packet transform against pytorch_wavelets (WaLLoC's way).

The peer is built exactly as the reference ``walloc`` package builds its WPT (walloc 1.2.1,
``Codec2D.wavelet_analysis`` / ``wavelet_synthesis``): ``DWTForward(J=1, wave='bior4.4',
mode='periodization')`` applied ``J`` times to all current bands (bands folded into channels with
``einops.rearrange(..., 'b c f h w -> b (c f) h w')``), and ``DWTInverse`` the same way back.
Both run in this process on the same input with the same thread count; we report the median of
several repeats after warm-up, and check that both reconstruct and that they agree.

    python benchmarks/bench_wavelets.py            # 8x3x256x256, J=3, float32, CPU
    python benchmarks/bench_wavelets.py --repeats 20 --threads 1

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


def time_median(fn, repeats: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


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
    parser.add_argument("--backward", action="store_true", help="also time forward+backward of wpt->iwpt")
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

    with torch.no_grad():
        # Interleave the two so that load from other processes hits both alike.
        ours_times, peer_times = [], []
        ours_fn(), peer_fn()
        for _ in range(args.warmup):
            ours_fn(), peer_fn()
        for _ in range(args.repeats):
            ours_times.append(time_median(ours_fn, 1, 0)[0])
            peer_times.append(time_median(peer_fn, 1, 0)[0])
    ours_s = statistics.median(ours_times)
    peer_s = statistics.median(peer_times)
    print(f"forward+inverse median of {args.repeats}: ours {ours_s * 1e3:.2f} ms, "
          f"pytorch_wavelets (walloc-style) {peer_s * 1e3:.2f} ms, speedup {peer_s / ours_s:.2f}x")
    result = {
        "benchmark": "wpt2d_forward_inverse",
        "ours_s": ours_s,
        "peer_s": peer_s,
        "speedup": peer_s / ours_s,
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
    }

    if args.backward:
        xg = x.clone().requires_grad_(True)

        def ours_bw():
            iwpt(wpt(xg, J, wave), J, wave).square().mean().backward()

        def peer_bw():
            peer.synthesis(peer.analysis(xg, J), J).square().mean().backward()

        ob = time_median(ours_bw, args.repeats, args.warmup)[0]
        pb = time_median(peer_bw, args.repeats, args.warmup)[0]
        print(f"forward+inverse+backward median: ours {ob * 1e3:.2f} ms, peer {pb * 1e3:.2f} ms, "
              f"speedup {pb / ob:.2f}x")
        result.update({"ours_fwd_bwd_s": ob, "peer_fwd_bwd_s": pb, "speedup_fwd_bwd": pb / ob})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
