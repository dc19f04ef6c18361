"""How good is a suspicion ranking at finding label errors? Every method, same data, several seeds.

Protocol (one seed; Koh & Liang 2017, §5.4 / Figure 6):

1. Split the items into a training part and a held-out test part (``test_fraction``, stratified, seeded).
   With injected noise (:mod:`relabel.noise`), the given labels are taken as the truth, the test part keeps
   them, and a fraction ``rate`` of the training labels is flipped. With known errors (a column, or
   reviewers' decisions), the test part is drawn from items *not* marked as errors and the training part
   keeps its labels as given.
2. Fit the logistic model (docs/maths.md, § Model and objective) to the training part and score every
   training item by each method (higher = more suspicious): ``self_influence``, ``loss``, ``margin``,
   ``random`` (from :class:`relabel.SuspicionScorer`) and ``confident_learning``: out-of-sample
   self-confidence from k-fold cross-validation, score_i = 1 − p̂_oof,i[y_i], where p̂_oof,i is predicted
   by the same logistic model (same λ) fitted on the folds that do not contain i (Northcutt et al. 2021's
   standard baseline).
3. A reviewer checks items in rank order. For a fraction f of the training data checked (k = round(f·n)
   items), *errors found* = |top-k ∩ errors| / |errors|. Also AUROC and average precision of the score as a
   detector of the error mask (sklearn.metrics; rank-based, so only the order matters).
4. *Fix and refit*: the errors among the top k (k = round(``fix_fraction``·n)) get their true labels back
   (when unknown, they are dropped from training), the model is refitted, and its accuracy is measured on
   the clean test part. Beside it: the accuracy with the noisy labels (nothing fixed) and, with injected
   noise, with every label clean (the ceiling).

Averages over seeds come with the sample standard deviation (ddof = 1; NaN for a single seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from relabel.errors import InputError
from relabel.logistic import LogisticFit, fit_logistic
from relabel.methods import COMPARISON_METHODS
from relabel.noise import NOISE_KINDS, inject_label_noise
from relabel.out_of_fold import out_of_fold_probabilities
from relabel.scorer import SuspicionScorer, check_class_counts
from relabel.selection import suspicion_ranks

DEFAULT_CHECKED_FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.20, 0.30)

#: One distinctive colour per method (also used by the HTML report's tests to find the plot on screen).
METHOD_COLOURS: dict[str, str] = {
    "self_influence": "#d62728",
    "loss": "#1f77b4",
    "margin": "#2ca02c",
    "confident_learning": "#9467bd",
    "random": "#7f7f7f",
}

#: Refits for fix-and-refit and cross-validation need the optimum only to classification accuracy.
REFIT_GRADIENT_TOLERANCE = 1e-6


@dataclass
class ComparisonConfig:
    """What to compare and how.

    Fields
    ------
    methods:            rankings to compare, among :data:`COMPARISON_METHODS`.
    noise:              "uniform", "pair" or None (None: use the known errors given to compare_methods).
    rate:               fraction of training labels flipped when ``noise`` is set, in (0, 1).
    seeds:              one run per seed (split, noise, random ranking and CV folds all follow the seed).
    checked_fractions:  fractions of the training data checked at which "errors found" is reported.
    fix_fraction:       fraction of the training data checked before fixing and refitting.
    test_fraction:      held-out clean test part, as a fraction of all items.
    cv_folds:           k of the k-fold cross-validation behind ``confident_learning``.
    l2:                 λ of the logistic model (docs/maths.md, § Model and objective), used by every fit.
    curve_points:       resolution of the "errors found vs data checked" curve (points on [0, 1]).
    progress:           show progress bars.
    """

    methods: tuple[str, ...] = COMPARISON_METHODS
    noise: str | None = "uniform"
    rate: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)
    checked_fractions: tuple[float, ...] = DEFAULT_CHECKED_FRACTIONS
    fix_fraction: float = 0.1
    test_fraction: float = 0.2
    cv_folds: int = 5
    l2: float = 1e-3
    curve_points: int = 201
    progress: bool = False

    def validate(self) -> None:
        unknown = [method for method in self.methods if method not in COMPARISON_METHODS]
        if unknown or not self.methods:
            raise InputError(f"unknown method(s) {unknown}: choose from {', '.join(COMPARISON_METHODS)}")
        if self.noise is not None and self.noise not in NOISE_KINDS:
            raise InputError(f"unknown noise {self.noise!r}: choose uniform or pair")
        if self.noise is not None and not 0.0 < self.rate < 1.0:
            raise InputError(f"--rate must lie strictly between 0 and 1; got {self.rate}")
        if not self.seeds:
            raise InputError("give at least one seed")
        for fraction in (*self.checked_fractions, self.fix_fraction):
            if not 0.0 < fraction <= 1.0:
                raise InputError(f"fractions of data checked must lie in (0, 1]; got {fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"test fraction must lie in (0, 1); got {self.test_fraction}")
        if self.cv_folds < 2:
            raise InputError(f"cross-validation needs at least 2 folds; got {self.cv_folds}")


def fraction_column(fraction: float) -> str:
    """Column name for "errors found when this fraction of the data is checked", e.g. ``found_at_10pct``."""
    percent = fraction * 100
    return f"found_at_{percent:g}pct"


def errors_found_curve(scores: np.ndarray, is_error: np.ndarray, fractions_checked: np.ndarray) -> np.ndarray:
    """errors found(f) = |top-round(f·n) ∩ errors| / |errors| for each f; ties keep input order."""
    n_items = len(scores)
    n_errors = int(is_error.sum())
    if n_errors == 0:
        return np.full(len(fractions_checked), np.nan)
    order = np.argsort(suspicion_ranks(scores), kind="stable")
    cumulative = np.concatenate([[0], np.cumsum(is_error[order])])
    checked = np.clip(np.round(np.asarray(fractions_checked) * n_items).astype(int), 0, n_items)
    return cumulative[checked] / n_errors


def detection_metrics(
    scores: np.ndarray, is_error: np.ndarray, checked_fractions: Sequence[float]
) -> dict[str, float]:
    """errors found at each checked fraction, AUROC and average precision of ``scores`` vs ``is_error``."""
    found = errors_found_curve(scores, is_error, np.asarray(checked_fractions, dtype=float))
    metrics = {fraction_column(f): float(v) for f, v in zip(checked_fractions, found, strict=True)}
    both_present = 0 < is_error.sum() < len(is_error)
    metrics["auroc"] = float(roc_auc_score(is_error, scores)) if both_present else float("nan")
    metrics["average_precision"] = (
        float(average_precision_score(is_error, scores)) if both_present else float("nan")
    )
    return metrics


def _fit(
    X: np.ndarray, y: np.ndarray, n_classes: int, l2: float, warm_start: LogisticFit | None
) -> LogisticFit:
    return fit_logistic(
        X,
        y,
        n_classes,
        l2=l2,
        gradient_tolerance=REFIT_GRADIENT_TOLERANCE,
        initial_Theta=None if warm_start is None else warm_start.Theta,
    )


def out_of_fold_self_confidence_scores(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    l2: float = 1e-3,
    seed: int = 0,
    warm_start: LogisticFit | None = None,
) -> np.ndarray:
    """confident_learning score_i = 1 − p̂_oof,i[y_i] ∈ [0, 1] (higher = more suspicious).

    p̂_oof,i: class probabilities for item i from the logistic model (λ = ``l2``) fitted on the other
    folds of a seeded (stratified when every class has ≥ ``folds`` items) k-fold split; the same as
    ``1 − sklearn.model_selection.cross_val_predict(..., method="predict_proba")[i, y_i]``.
    """
    out_of_fold = out_of_fold_probabilities(
        X,
        y,
        n_classes,
        folds=folds,
        l2=l2,
        seed=seed,
        warm_start=warm_start,
        gradient_tolerance=REFIT_GRADIENT_TOLERANCE,
    )
    return 1.0 - out_of_fold[np.arange(len(y)), y]


def _accuracy(fit: LogisticFit, X: np.ndarray, y: np.ndarray) -> float:
    return float((fit.predict_proba(X).argmax(axis=1) == y).mean()) if len(y) else float("nan")


@dataclass
class SeedSplit:
    """One seed's data: training features/labels as given to the rankers, the error mask, the truth."""

    X_train: np.ndarray
    y_train: np.ndarray
    is_error: np.ndarray
    true_train: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray


def _split_for_seed(
    X: np.ndarray,
    y: np.ndarray,
    config: ComparisonConfig,
    seed: int,
    n_classes: int,
    known_errors: np.ndarray | None,
    true_labels: np.ndarray | None,
) -> SeedSplit:
    rows = np.arange(len(y))
    if known_errors is None:
        counts = np.bincount(y, minlength=n_classes)
        stratify = y if counts[counts > 0].min() >= 2 else None
        train, test = train_test_split(
            rows, test_size=config.test_fraction, random_state=seed, stratify=stratify
        )
        noisy = inject_label_noise(y[train], config.rate, kind=config.noise, seed=seed, n_classes=n_classes)
        return SeedSplit(X[train], noisy.labels, noisy.flipped, noisy.original, X[test], y[test])
    clean_rows = rows[~known_errors]
    n_test = round(config.test_fraction * len(y))
    if n_test >= len(clean_rows):
        raise InputError(
            "too few items without a known error to hold out a test part; lower the test fraction"
        )
    test = np.sort(np.random.default_rng(seed).choice(clean_rows, size=n_test, replace=False))
    train = np.setdiff1d(rows, test)
    return SeedSplit(
        X[train],
        y[train],
        known_errors[train],
        None if true_labels is None else true_labels[train],
        X[test],
        y[test],
    )


@dataclass
class ComparisonResult:
    """Results of :func:`compare_methods`.

    ``per_seed``: one row per (seed, method) with ``n_train``, ``n_errors``, ``found_at_<f>pct`` columns,
    ``auroc``, ``average_precision``, ``test_accuracy_fixed`` (after fixing the top ``fix_fraction``),
    ``test_accuracy_noisy`` and ``test_accuracy_clean`` (that seed's references). ``summary``: one row per
    method, ``<metric>_mean`` and ``<metric>_std`` across seeds. ``curves[method]``: (n_seeds, curve_points)
    errors found at each fraction checked in ``fractions_checked``; ``ideal_curve``: the best possible one
    (all errors first), averaged over seeds.
    """

    config: ComparisonConfig
    per_seed: pd.DataFrame
    summary: pd.DataFrame
    fractions_checked: np.ndarray
    curves: dict[str, np.ndarray]
    ideal_curve: np.ndarray
    description: str = ""
    files: dict[str, Path] = field(default_factory=dict)

    def metric_columns(self) -> list[str]:
        return [
            *(fraction_column(f) for f in self.config.checked_fractions),
            "auroc",
            "average_precision",
            "test_accuracy_fixed",
        ]

    def table(self) -> str:
        """The summary as a fixed-width text table: mean ± std per method and metric."""
        headers = ["method", *self.metric_columns()]
        lines = []
        for _, row in self.summary.iterrows():
            cells = [str(row["method"])]
            for metric in headers[1:]:
                mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
                cells.append(f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}")
            lines.append(cells)
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        render = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        render.append("-+-".join("-" * w for w in widths))
        render += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
        reference = self.per_seed.drop_duplicates("seed")
        render.append(
            f"test accuracy with noisy labels: {reference['test_accuracy_noisy'].mean():.3f}; "
            f"with clean labels: {reference['test_accuracy_clean'].mean():.3f}; "
            f"fixed = true labels restored among the top {self.config.fix_fraction:.0%} checked, refitted"
        )
        return "\n".join(render)

    def write(self, out_dir: str | Path, stem: str = "comparison") -> dict[str, Path]:
        """Write ``<stem>.csv`` (summary), ``<stem>_per_seed.csv``, ``<stem>_curves.csv``, ``<stem>.png``
        (mode 0600, spreadsheet-safe CSV: :mod:`relabel.output`)."""
        from relabel.output import private_file, private_folder, write_csv

        out_dir = private_folder(out_dir, "--out folder")
        paths = {
            "summary_csv": out_dir / f"{stem}.csv",
            "per_seed_csv": out_dir / f"{stem}_per_seed.csv",
            "curves_csv": out_dir / f"{stem}_curves.csv",
            "plot_png": out_dir / f"{stem}.png",
        }
        write_csv(self.summary, paths["summary_csv"])
        write_csv(self.per_seed, paths["per_seed_csv"])
        curves = pd.DataFrame({"fraction_checked": self.fractions_checked, "ideal": self.ideal_curve})
        for method, values in self.curves.items():
            curves[f"{method}_mean"] = values.mean(axis=0)
            curves[f"{method}_std"] = values.std(axis=0, ddof=1) if len(values) > 1 else np.nan
        write_csv(curves, paths["curves_csv"])
        with private_file(paths["plot_png"]) as temporary:
            plot_errors_found(self, temporary, file_format="png")
        self.files = paths
        return paths


def plot_errors_found(
    result: ComparisonResult, path: str | Path, max_fraction: float = 0.5, file_format: str | None = None
) -> Path:
    """PNG: fraction of errors found vs fraction of data checked, one line per method (mean ± std band).

    The form of Koh & Liang's Figure 6; the x axis stops at ``max_fraction`` where the methods differ.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.0, 4.8), dpi=110)
    x = result.fractions_checked
    shown = x <= max_fraction + 1e-12
    axes.plot(x[shown], result.ideal_curve[shown], color="black", linestyle=":", linewidth=1.2, label="ideal")
    for method, values in result.curves.items():
        mean = values.mean(axis=0)
        colour = METHOD_COLOURS.get(method)
        axes.plot(x[shown], mean[shown], color=colour, linewidth=2.4, label=method)
        if len(values) > 1:
            std = values.std(axis=0, ddof=1)
            axes.fill_between(
                x[shown], (mean - std)[shown], (mean + std)[shown], color=colour, alpha=0.15, linewidth=0
            )
    axes.set_xlabel("fraction of training data checked")
    axes.set_ylabel("fraction of label errors found")
    axes.set_xlim(0, max_fraction)
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    title = "Label errors found vs data checked"
    if result.description:
        title += f"\n{result.description}"
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format=file_format)
    plt.close(figure)
    return Path(path)


def compare_methods(
    X: np.ndarray,
    y: Sequence[int] | np.ndarray,
    config: ComparisonConfig | None = None,
    *,
    n_classes: int | None = None,
    known_errors: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
    description: str = "",
    on_seed_done: Callable[[int], None] | None = None,
) -> ComparisonResult:
    """Run the protocol of the module docstring for every seed and method; returns a ComparisonResult.

    X: (n, d) float features (already featurized, e.g. scaled to [0, 1]); y: (n,) integer classes
    0..K-1 (the labels as given). With ``config.noise`` set, ``y`` is the truth and noise is injected;
    with ``config.noise=None``, ``known_errors`` (n,) bool marks the items whose given label is wrong and
    ``true_labels`` (optional, (n,) int) their right labels.
    """
    config = config or ComparisonConfig()
    config.validate()
    X, y, n_classes, known_errors = _checked_inputs(X, y, config, n_classes, known_errors)

    fractions_checked = np.linspace(0.0, 1.0, config.curve_points)
    rows: list[dict[str, object]] = []
    curves: dict[str, list[np.ndarray]] = {method: [] for method in config.methods}
    ideal_curves: list[np.ndarray] = []
    steps_per_seed = 3 + len(config.methods)
    with tqdm(total=len(config.seeds) * steps_per_seed, desc="compare", disable=not config.progress) as bar:
        for seed in config.seeds:
            bar.set_postfix(seed=seed, stage="fit")
            split = _split_for_seed(X, y, config, seed, n_classes, known_errors, true_labels)
            evaluation = _evaluate_seed(split, config, seed, n_classes, fractions_checked, bar)
            rows += evaluation.rows
            for method, curve in evaluation.curves.items():
                curves[method].append(curve)
            ideal_curves.append(evaluation.ideal_curve)
            if on_seed_done is not None:
                on_seed_done(seed)

    per_seed = pd.DataFrame(rows)
    result = ComparisonResult(
        config=config,
        per_seed=per_seed,
        summary=pd.DataFrame(),
        fractions_checked=fractions_checked,
        curves={method: np.vstack(values) for method, values in curves.items()},
        ideal_curve=np.mean(ideal_curves, axis=0),
        description=description,
    )
    result.summary = summarise(per_seed, result.metric_columns(), config.methods)
    return result


def _checked_inputs(
    X: np.ndarray,
    y: Sequence[int] | np.ndarray,
    config: ComparisonConfig,
    n_classes: int | None,
    known_errors: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """(X as (n, d) float64, y as (n,) int64, K, known_errors as (n,) bool or None), or InputError.

    Exactly one source of errors is allowed: injected noise (``config.noise``) or ``known_errors``, which
    must mark at least one item; every class must have enough items (:func:`check_class_counts`).
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("compare_methods needs integer class indices 0..K-1 (encode the labels first)")
    y = y.astype(np.int64)
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    if config.noise is None:
        if known_errors is None:
            raise InputError(
                "no errors to find: inject noise (--noise) or give known errors (--error-column)"
            )
        known_errors = np.asarray(known_errors, dtype=bool)
        if known_errors.shape != y.shape:
            raise InputError(
                f"known_errors must have one entry per item ({len(y)}); got {known_errors.shape}"
            )
        if not known_errors.any():
            raise InputError("none of the items is marked as an error: nothing to find")
    elif known_errors is not None:
        raise InputError("give either injected noise or known errors, not both")
    check_class_counts(y, list(range(n_classes)))
    return X, y, n_classes, known_errors


@dataclass
class SeedEvaluation:
    """One seed's results: ``rows`` (one per method, the columns of ``ComparisonResult.per_seed``),
    ``curves`` (method → errors found at each fraction checked, shape (curve_points,)) and ``ideal_curve``
    (the same for a ranking with every error first)."""

    rows: list[dict[str, object]]
    curves: dict[str, np.ndarray]
    ideal_curve: np.ndarray


def _evaluate_seed(
    split: SeedSplit,
    config: ComparisonConfig,
    seed: int,
    n_classes: int,
    fractions_checked: np.ndarray,
    bar: Any,
) -> SeedEvaluation:
    """Steps 2–4 of the protocol for one seed's split: fit, score, reference accuracies, then per method
    the detection metrics, the errors-found curve and the accuracy after fix-and-refit.

    ``bar`` (tqdm, its stage already "fit") advances 3 + len(config.methods) steps. Accuracies are
    fractions of the test part in [0, 1]; methods whose top ``fix_fraction`` holds the same errors share
    one refit.
    """
    scorer = SuspicionScorer(model="logistic", l2=config.l2, seed=seed).fit(
        split.X_train, split.y_train, classes=list(range(n_classes))
    )
    noisy_fit = scorer.logistic_fit
    bar.update(1)
    bar.set_postfix(seed=seed, stage="score")
    scores = _training_scores(scorer, split, config, seed, n_classes)
    bar.update(1)
    accuracy_noisy, accuracy_clean = _reference_accuracies(split, config, n_classes, noisy_fit)
    bar.update(1)
    n_train = len(split.y_train)
    n_fixed = round(config.fix_fraction * n_train)
    evaluation = SeedEvaluation(
        rows=[],
        curves={},
        ideal_curve=np.minimum(1.0, np.round(fractions_checked * n_train) / max(1, split.is_error.sum())),
    )
    fixed_accuracy: dict[bytes, float] = {}
    for method in config.methods:
        bar.set_postfix(seed=seed, stage=f"refit {method}")
        method_scores = np.asarray(scores[method], dtype=np.float64)
        metrics = detection_metrics(method_scores, split.is_error, config.checked_fractions)
        evaluation.curves[method] = errors_found_curve(method_scores, split.is_error, fractions_checked)
        found = (suspicion_ranks(method_scores) <= n_fixed) & split.is_error
        key = found.tobytes()
        if key not in fixed_accuracy:  # methods that found the same errors share one refit
            fixed_accuracy[key] = _fixed_accuracy(split, found, n_classes, config.l2, noisy_fit)
        evaluation.rows.append(
            {
                "seed": seed,
                "method": method,
                "n_train": n_train,
                "n_errors": int(split.is_error.sum()),
                **metrics,
                "test_accuracy_fixed": fixed_accuracy[key],
                "test_accuracy_noisy": accuracy_noisy,
                "test_accuracy_clean": accuracy_clean,
            }
        )
        bar.update(1)
    return evaluation


def _training_scores(
    scorer: SuspicionScorer, split: SeedSplit, config: ComparisonConfig, seed: int, n_classes: int
) -> pd.DataFrame:
    """Every training item's score by each of ``config.methods`` (higher = more suspicious), one column per
    method: the scorer's methods from its fit, ``confident_learning`` from k-fold cross-validation."""
    ranker_methods = tuple(m for m in config.methods if m != "confident_learning")
    scores = scorer.scores(ranker_methods) if ranker_methods else pd.DataFrame()
    if "confident_learning" in config.methods:
        scores["confident_learning"] = out_of_fold_self_confidence_scores(
            split.X_train,
            split.y_train,
            n_classes,
            folds=config.cv_folds,
            l2=config.l2,
            seed=seed,
            warm_start=scorer.logistic_fit,
        )
    return scores


def _reference_accuracies(
    split: SeedSplit, config: ComparisonConfig, n_classes: int, noisy_fit: LogisticFit
) -> tuple[float, float]:
    """Test accuracy (fraction in [0, 1]) of the model fitted to the labels as given, and of one refitted
    to the true training labels (NaN unless noise was injected, i.e. the truth is known)."""
    accuracy_noisy = _accuracy(noisy_fit, split.X_test, split.y_test)
    if split.true_train is not None and config.noise is not None:
        clean_fit = _fit(split.X_train, split.true_train, n_classes, config.l2, noisy_fit)
        return accuracy_noisy, _accuracy(clean_fit, split.X_test, split.y_test)
    return accuracy_noisy, float("nan")


def _fixed_accuracy(
    split: SeedSplit, found: np.ndarray, n_classes: int, l2: float, noisy_fit: LogisticFit
) -> float:
    """Test accuracy (fraction in [0, 1]) after fixing the errors marked in ``found`` (bool, one per
    training item) and refitting: their true labels restored when known, else those items dropped."""
    if split.true_train is not None:
        fixed_labels = split.y_train.copy()
        fixed_labels[found] = split.true_train[found]
        fixed_fit = _fit(split.X_train, fixed_labels, n_classes, l2, noisy_fit)
    else:
        keep = ~found
        fixed_fit = _fit(split.X_train[keep], split.y_train[keep], n_classes, l2, noisy_fit)
    return _accuracy(fixed_fit, split.X_test, split.y_test)


def summarise(per_seed: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """One row per method (in ``methods`` order): ``<metric>_mean``, ``<metric>_std`` (ddof = 1), n_seeds."""
    grouped = per_seed.groupby("method", sort=False)[list(metrics)]
    means = grouped.mean().add_suffix("_mean")
    stds = grouped.std(ddof=1).add_suffix("_std")
    summary = pd.concat([means, stds], axis=1)
    ordered_columns = [column for metric in metrics for column in (f"{metric}_mean", f"{metric}_std")]
    summary = summary[ordered_columns].reindex(list(methods))
    summary.insert(0, "n_seeds", per_seed.groupby("method", sort=False)["seed"].nunique())
    summary = summary.reset_index().rename(columns={"index": "method"})
    for column in ("n_train", "n_errors"):
        summary.insert(2, f"{column}_mean", per_seed.groupby("method", sort=False)[column].mean().to_numpy())
    return summary
