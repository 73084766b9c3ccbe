"""The corpus benchmarks skip cleanly (exit 0, a JSON last line saying so) without ../shared/data.

Running each script against an empty data folder also catches import rot: a benchmark that
imports a renamed function fails here instead of on the day someone runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS_BENCHMARKS = [
    "bench_hyperprior.py",
    "bench_latent_loader.py",
    "bench_rd.py",
    "bench_walloc_audio.py",
    "bench_walloc_image.py",
    "bench_walloc_video.py",
    "diag_hyperprior_ceiling.py",
    "diag_walloc_entropy.py",
]
BENCH_EXTRAS = ("walloc", "pytorch_wavelets", "imagecodecs", "vector_quantize_pytorch", "matplotlib")


@pytest.mark.parametrize("script", CORPUS_BENCHMARKS)
def test_benchmark_skips_without_corpus(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "NEURALCODEC_DATA": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    missing = [m for m in BENCH_EXTRAS if f"No module named '{m}'" in proc.stderr]
    if missing:  # the bench extra is not installed here (CI installs only .[test])
        pytest.skip(f"{script} needs the bench extra ({', '.join(missing)})")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.dumps(last).lower().count("skip") >= 1, last
