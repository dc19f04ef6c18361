"""Benchmark the scoring engine and print two tables.

1. Exact self-influence for the logistic model at growing (n, d, K), up to n = 55,000, d = 784, K = 10
   (p = 7,850 parameters, the MNIST logistic regression of Koh & Liang): wall time and peak traced memory
   of relabel's exact solver (Hessian + Cholesky + all n self-influences), beside the time of the bare
   numpy/scipy stages it is built from, measured in the same run on the same shapes:
     Hessian GEMMs   K SYRKs X̃ᵀX̃ and K(K−1)/2 GEMMs X̃ᵀB, B a distinct n×(d+1) matrix
                     (the products the blockwise Hessian needs, on the whole X̃ at once)
     Cholesky        scipy.linalg.cholesky of a p×p SPD matrix
     triangular      scipy.linalg.solve_triangular of a p×p factor against n right-hand sides (chunks)
   The ratio column is relabel's time over the sum of the bare stages (target ≤ 1.3).
   With --precision: float64 against mixed precision (float32 GEMM/SYRK and triangular solves, float64
   Cholesky) at the same sizes, runs alternated (float64, mixed, float64, mixed, ... --repeats rounds; the
   fastest of each kept, as other load on the machine only slows a run down): seconds, speed-up, the
   largest and median relative error over all n items against float64, and the solver's own estimate.
2. LiSSA self-influence of every digits item for an MLP: right-hand sides solved in blocks vs one point
   at a time, with accuracy against the explicit (H + δI)⁻¹ built from Hessian-vector products.
   Two Hessian modes: the full-data H (deterministic, stops on the relative-change tolerance) and
   minibatch H_B (the original LiSSA, fixed depth T = ⌈7 s/λ_min⌉). One-at-a-time is timed on a sample
   of points and reported per point and extrapolated to all n.

Usage:
    .venv/bin/python scripts/bench_scoring.py                 # both tables, full sizes (several minutes)
    .venv/bin/python scripts/bench_scoring.py --exact-sizes 5000x64x10 --skip-lissa
    .venv/bin/python scripts/bench_scoring.py --skip-exact --device cuda
    .venv/bin/python scripts/bench_scoring.py --precision --exact-sizes 10000x300x10 --skip-lissa
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import linalg
from scipy.stats import spearmanr

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from relabel.influence.exact import ExactLogisticSolver, LogisticGradients  # noqa: E402
from relabel.logistic import fit_logistic  # noqa: E402

DEFAULT_EXACT_SIZES = ("5000x100x10", "20000x300x10", "55000x784x10")


def synthetic_classification(n: int, d: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes in R^d (unit variance, class means at distance ≈ 3), 5% labels flipped."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, d)) * (3.0 / np.sqrt(2 * d))
    y = rng.integers(0, n_classes, size=n)
    X = means[y] + rng.normal(size=(n, d))
    flipped = rng.random(n) < 0.05
    y[flipped] = (y[flipped] + rng.integers(1, n_classes, size=flipped.sum())) % n_classes
    return X, y


def time_call(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def bare_stage_times(X_tilde: np.ndarray, n_classes: int, chunk_size: int) -> dict[str, float]:
    """Seconds for the bare linear-algebra stages with the shapes of the exact solver."""
    width = X_tilde.shape[1]
    p = n_classes * width
    other = X_tilde * 0.5  # a distinct matrix: numpy turns X̃ᵀX̃ itself into a half-cost SYRK
    start = time.perf_counter()
    for _ in range(n_classes):
        X_tilde.T @ X_tilde
    for _ in range(n_classes * (n_classes - 1) // 2):
        X_tilde.T @ other
    gemm = time.perf_counter() - start
    del other
    rng = np.random.default_rng(1)
    spd = rng.normal(size=(p, p)) / np.sqrt(p)
    spd = spd @ spd.T + np.eye(p)
    start = time.perf_counter()
    factor = linalg.cholesky(spd, lower=True, overwrite_a=True, check_finite=False)
    cholesky = time.perf_counter() - start
    del spd
    n = X_tilde.shape[0]
    right_hand_sides = rng.normal(size=(p, min(chunk_size, n)))
    start = time.perf_counter()
    for begin in range(0, n, chunk_size):
        columns = min(chunk_size, n - begin)
        linalg.solve_triangular(factor, right_hand_sides[:, :columns], lower=True, check_finite=False)
    triangular = time.perf_counter() - start
    return {"gemm": gemm, "cholesky": cholesky, "triangular": triangular}


def bench_exact(sizes: list[str], l2: float, chunk_size: int) -> None:
    print("\nExact self-influence, logistic model (float64, this machine's BLAS threads)")
    header = (
        f"{'n':>7} {'d':>5} {'K':>3} {'p':>6} | {'fit s':>7} {'‖∇J‖':>8} | {'relabel s':>9} {'peak MB':>8} | "
        f"{'GEMM s':>7} {'chol s':>7} {'trsm s':>7} {'bare s':>7} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        n, d, n_classes = (int(value) for value in size.split("x"))
        X, y = synthetic_classification(n, d, n_classes)
        fit_seconds, fit = time_call(fit_logistic, X, y, n_classes, l2=l2)
        gradients = LogisticGradients(X, y, fit)
        del X
        tracemalloc.start()
        start = time.perf_counter()
        solver = ExactLogisticSolver(gradients, chunk_size=chunk_size)
        scores = solver.self_influence()
        relabel_seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert np.all(np.isfinite(scores)) and np.all(scores > 0)
        del solver
        bare = bare_stage_times(gradients.X_tilde, n_classes, chunk_size)
        bare_total = sum(bare.values())
        print(
            f"{n:>7} {d:>5} {n_classes:>3} {fit.n_parameters:>6} | "
            f"{fit_seconds:>7.1f} {fit.gradient_norm:>8.1e} | "
            f"{relabel_seconds:>9.1f} {peak / 2**20:>8.0f} | {bare['gemm']:>7.1f} {bare['cholesky']:>7.1f} "
            f"{bare['triangular']:>7.1f} {bare_total:>7.1f} | {relabel_seconds / bare_total:>5.2f}",
            flush=True,
        )
    print(
        "peak MB: largest memory traced by tracemalloc during Hessian + Cholesky + scoring "
        "(X̃ itself excluded)"
    )


def bench_precision(sizes: list[str], l2: float, chunk_size: int, repeats: int) -> None:
    print("\nExact self-influence: float64 vs mixed precision (fastest of alternated runs)")
    header = (
        f"{'n':>7} {'d':>5} {'K':>3} {'p':>6} | {'float64 s':>9} {'mixed s':>8} {'speed-up':>8} | "
        f"{'max rel err':>11} {'median':>8} {'estimate':>8} {'ran':>7}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        n, d, n_classes = (int(value) for value in size.split("x"))
        X, y = synthetic_classification(n, d, n_classes)
        gradients = LogisticGradients(X, y, fit_logistic(X, y, n_classes, l2=l2))
        seconds: dict[str, list[float]] = {"float64": [], "mixed": []}
        scores: dict[str, np.ndarray] = {}
        for _ in range(repeats):
            for precision in ("float64", "mixed"):
                start = time.perf_counter()
                solver = ExactLogisticSolver(gradients, chunk_size=chunk_size, precision=precision)
                scores[precision] = solver.self_influence()
                seconds[precision].append(time.perf_counter() - start)
                if precision == "mixed":
                    estimate, ran = solver.estimated_relative_error, solver.precision_used
                del solver
        error = np.abs(scores["mixed"] - scores["float64"]) / scores["float64"]
        fastest = {precision: min(values) for precision, values in seconds.items()}
        print(
            f"{n:>7} {d:>5} {n_classes:>3} {gradients.n_parameters:>6} | {fastest['float64']:>9.1f} "
            f"{fastest['mixed']:>8.1f} {fastest['float64'] / fastest['mixed']:>7.2f}× | "
            f"{error.max():>11.1e} {np.median(error):>8.1e} {estimate:>8.1e} {ran:>7}",
            flush=True,
        )


def bench_lissa(
    hidden_units: int,
    sample_single: int,
    device: str,
    damping_fraction: float,
    tolerance: float,
    minibatch: int,
) -> None:
    import torch
    from sklearn.datasets import load_digits

    from relabel.influence.lissa import LissaConfig, LissaSolver
    from relabel.influence.torch_objective import TorchObjective
    from relabel.torch_models import build_mlp, train_to_stationary_point

    X, y = load_digits(return_X_y=True)
    inputs = torch.tensor(X / 16.0, dtype=torch.float64, device=device)
    targets = torch.tensor(y, device=device)
    torch.manual_seed(0)
    model = build_mlp(64, 10, hidden_units).to(device, torch.float64)
    train_seconds, report = time_call(
        train_to_stationary_point, model, inputs, targets, weight_decay=1e-3, gradient_tolerance=1e-5
    )
    objective = TorchObjective(model, inputs, targets, weight_decay=1e-3)
    p, n = objective.n_parameters, objective.n_items
    probe = LissaSolver(objective, damping=1e-12)
    damping = damping_fraction * probe.diagnostics.largest_eigenvalue

    start = time.perf_counter()
    operator = objective.hessian_operator()
    identity = torch.eye(p, dtype=torch.float64, device=device)
    hessian = torch.cat([operator(identity[i : i + 256]) for i in range(0, p, 256)])
    hessian = 0.5 * (hessian + hessian.T) + damping * identity
    gradients = objective.per_example_gradients(np.arange(n))
    reference = (gradients * torch.linalg.solve(hessian, gradients.T).T).sum(1).cpu().numpy()
    explicit_seconds = time.perf_counter() - start

    sample = np.random.default_rng(0).choice(n, size=sample_single, replace=False)
    everyone = np.arange(n)
    modes = (
        # label, Hessian rows per iteration (None = all n), block size, items timed
        ("full H, block 64", None, 64, everyone),
        ("full H, one at a time", None, 1, sample),
        (f"H_B({minibatch}), block {minibatch}", minibatch, minibatch, everyone),
        (f"H_B({minibatch}), one at a time", minibatch, 1, sample),
    )
    rows = []
    for label, batch_size, block_size, items in modes:
        config = LissaConfig(block_size=block_size, tolerance=tolerance, batch_size=batch_size)
        solver = LissaSolver(objective, config, damping=damping)
        start = time.perf_counter()
        scores = solver.self_influence_of(objective.per_example_gradients(items))
        seconds = time.perf_counter() - start
        relative_error = np.abs(scores - reference[items]) / reference[items]
        rows.append(
            (
                label,
                len(items),
                seconds,
                seconds / len(items) * n,
                seconds / len(items) * 1e3,
                spearmanr(scores, reference[items]).statistic,
                float(np.median(relative_error)),
                solver.diagnostics.iterations,
            )
        )
    print(
        f"\nLiSSA self-influence, MLP 64-{hidden_units}-10 (tanh) on digits: n = {n}, p = {p}, "
        f"trained in {train_seconds:.1f} s to ‖∇J‖ = {report.gradient_norm:.1e}; "
        f"δ = {damping:.3g} ({damping_fraction:g}·λ_max), s = λ_max + δ, tolerance {tolerance:g}, "
        f"device {device}"
    )
    print(f"explicit (H + δI)⁻¹ reference: {explicit_seconds:.1f} s")
    header = (
        f"{'mode':<22} {'points':>6} {'seconds':>8} {'s for all n':>11} {'ms/point':>9} "
        f"{'Spearman':>8} {'med rel err':>11} {'iters':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, count, seconds, extrapolated, per_point, rho, error, iterations in rows:
        print(
            f"{label:<22} {count:>6} {seconds:>8.1f} {extrapolated:>11.1f} {per_point:>9.2f} "
            f"{rho:>8.4f} {error:>11.2e} {iterations:>6}"
        )
    for batched, single in ((rows[0], rows[1]), (rows[2], rows[3])):
        print(f"speed-up, {batched[0]} over one point at a time (per point): {single[4] / batched[4]:.1f}×")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--exact-sizes", nargs="+", default=list(DEFAULT_EXACT_SIZES), help="NxDxK entries")
    parser.add_argument("--l2", type=float, default=1e-3, help="λ for the logistic fits (default 1e-3)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="gradient rows per triangular solve")
    parser.add_argument("--hidden-units", type=int, default=16, help="MLP hidden width (default 16)")
    parser.add_argument(
        "--single-sample", type=int, default=10, help="points timed one at a time (default 10)"
    )
    parser.add_argument("--minibatch", type=int, default=128, help="rows per minibatch Hessian (default 128)")
    parser.add_argument("--damping-fraction", type=float, default=0.05, help="δ as a fraction of λ_max")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="LiSSA relative-change tolerance")
    parser.add_argument("--device", default="cpu", help="torch device for the LiSSA table")
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--precision", action="store_true", help="float64 vs mixed table instead of table 1")
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternated rounds for --precision (default: 2)"
    )
    parser.add_argument("--skip-lissa", action="store_true")
    args = parser.parse_args()
    if args.precision:
        bench_precision(args.exact_sizes, args.l2, args.chunk_size, args.repeats)
    elif not args.skip_exact:
        bench_exact(args.exact_sizes, args.l2, args.chunk_size)
    if not args.skip_lissa:
        bench_lissa(
            args.hidden_units,
            args.single_sample,
            args.device,
            args.damping_fraction,
            args.tolerance,
            args.minibatch,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
