"""Benchmark `relabel rank --stream` against the in-memory `relabel rank` on a synthetic tabular Parquet file.

The file: n rows × d float32 features, K classes (Gaussian classes, class means at distance ≈ 3, 5 % of the
labels flipped), written in row groups so the generator never holds it whole. Each mode runs as its own
`relabel rank` process (self_influence and loss, the default methods); the table gives its wall time and
its peak resident memory (the child's ``ru_maxrss``, which includes the interpreter, numpy and torch).

Usage:
    .venv/bin/python scripts/bench_streaming.py                          # 1,000,000 × 100, 10 classes
    .venv/bin/python scripts/bench_streaming.py --rows 200000 --modes stream,memory
    .venv/bin/python scripts/bench_streaming.py --modes stream --methods loss   # the fit's passes only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_synthetic_parquet(path: Path, n: int, d: int, n_classes: int, seed: int = 0) -> None:
    """Gaussian classes in R^d (float32), 5 % of labels flipped, row groups of 100,000 rows."""
    rng = np.random.default_rng(seed)
    means = (rng.normal(size=(n_classes, d)) * (3.0 / np.sqrt(2 * d))).astype(np.float32)
    writer = None
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        y = rng.integers(0, n_classes, size=m)
        X = means[y] + rng.normal(size=(m, d)).astype(np.float32)
        flipped = rng.random(m) < 0.05
        y[flipped] = (y[flipped] + rng.integers(1, n_classes, size=flipped.sum())) % n_classes
        columns = {f"f{j}": X[:, j] for j in range(d)}
        columns["label"] = y.astype(np.int64)
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def run_rank(data: Path, out: Path, extra: list[str]) -> tuple[float, int, int]:
    """(seconds, peak RSS bytes, exit code) of one `relabel rank` process."""
    command = [sys.executable, "-m", "relabel.cli", "rank", str(data), "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, int(usage.ru_maxrss) * 1024, process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--modes", default="stream,memory", help="comma-separated: stream, memory")
    parser.add_argument("--methods", default="self_influence,loss", help="passed to relabel rank --methods")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relabel-bench-") as folder:
        data = Path(folder) / "data.parquet"
        start = time.perf_counter()
        write_synthetic_parquet(data, args.rows, args.features, args.classes)
        print(
            f"wrote {args.rows:,} × {args.features} float32, {args.classes} classes "
            f"({data.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        print(f"{'mode':>8} | {'seconds':>8} | {'peak RSS MiB':>12} | exit")
        for mode in args.modes.split(","):
            extra = ["--stream", "--chunk-rows", str(args.chunk_rows)] if mode == "stream" else []
            extra += ["--methods", args.methods]
            seconds, peak, code = run_rank(data, Path(folder) / f"{mode}.parquet", extra)
            print(f"{mode:>8} | {seconds:>8.0f} | {peak / 2**20:>12,.0f} | {code}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
