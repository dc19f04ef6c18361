"""One audit, end to end: pull → featurize → fit → score → select (and triage) → push → report.

Each stage is one call into the module that owns it (the connector's ``pull``,
:func:`relabel.featurizers.featurize`, :class:`relabel.scorer.SuspicionScorer`, :mod:`relabel.selection`,
the connector's ``push``, :mod:`relabel.report`); this module only wires them and times them. ``relabel
audit``, the nightly run (which passes the items reviewed since earlier runs as ``excluded``), the demo
and ``relabel compare``/``explain`` on a Label Studio project all go through it.

The connector is anything with ``pull(project_id, control=, progress=) -> LabeledDataset``,
``push(project_id, items, mode=, method=, control=, progress=, write_mislabeling=, basis=) -> PushResult`` and
``url`` (e.g. :class:`connectors.label_studio.LabelStudioConnector`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.dataset import LabeledDataset
from relabel.errors import InputError
from relabel.explanations import with_evidence
from relabel.settings import AuditSettings


@dataclass
class AuditResult:
    """What one audit did.

    n_tasks:          tasks in the project; n_labeled: those with a usable label (ranked);
                      n_unlabeled: the rest.
    n_features:       width of the feature matrix handed to the model (C·H·W for the CNN).
    flagged_task_ids: the flagged tasks, most suspicious first.
    ranking:          one row per labeled task (see :func:`relabel.selection.ranking_table`).
    push:             what the review-queue push did (None when nothing was pushed).
    url:              where to look in the browser (the view or the review project).
    seconds:          wall-clock seconds per stage: pull, choose (model "auto"), featurize, fit, score,
                      out-of-fold, triage, push, report.
    report_path:      the ``report.html`` written (beside ``ranking.csv`` and ``ranking.parquet``), if any.
    triage:           the flagged items' tiers and the estimated number of label errors
                      (:class:`relabel.triage.Triage`).
    reread:           the project changed between the pull and the push (another writer ran): it was
                      pulled and ranked again under the write lease, and the push used that.
    model_choice:     what ``model="auto"`` chose and why (:class:`relabel.models.choice.ModelChoice`);
                      None when the model was named.
    """

    project_id: int
    settings: AuditSettings
    n_tasks: int
    n_labeled: int
    n_unlabeled: int
    n_features: int
    flagged_task_ids: list[int]
    ranking: pd.DataFrame
    push: Any
    url: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    dataset: LabeledDataset | None = None
    scorer: Any = None
    triage: Any = None
    reread: bool = False
    model_choice: Any = None

    @property
    def n_flagged(self) -> int:
        return len(self.flagged_task_ids)

    @property
    def model_name(self) -> str:
        """The model that was fitted: the settings' name, or what ``auto`` chose."""
        choice = self.model_choice
        return self.settings.model if choice is None else choice.model

    @property
    def skipped(self) -> dict[Any, str]:
        """Labeled tasks left out because their input could not be read: task id → one-line reason."""
        return dict(getattr(self.dataset, "skipped", None) or {})

    def summary(self) -> str:
        """A few human-readable lines: what was ranked, what was pushed, and where to look."""
        skipped = self.skipped
        lines = [
            f"project {self.project_id}: {self.n_tasks} tasks, {self.n_labeled} labeled and ranked "
            f"({self.n_unlabeled} without a usable label left out"
            + (f", {len(skipped)} skipped: input unreadable" if skipped else "")
            + f"); model {self.model_name}, method {self.settings.method}",
        ]
        lines += skipped_lines(skipped)
        if self.model_choice is not None:
            lines.append(self.model_choice.describe())
        lines.append(f"flagged the top {self.n_flagged} items (task ids {_preview(self.flagged_task_ids)})")
        if self.triage is not None:
            lines.append(self.triage.summary_line())
        lines += self.solver_lines()
        if self.reread:
            lines.append(
                "the project changed while the audit ran (another writer finished first): pulled and ranked "
                "again under the write lease before pushing"
            )
        if self.push is not None:
            lines.append(self.push.summary())
        if self.report_path is not None:
            lines.append(f"report written to {self.report_path} (ranking.csv and ranking.parquet beside it)")
        timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        lines.append(f"time: {timing}")
        return "\n".join(lines)

    def solver_lines(self) -> list[str]:
        """How the scores were computed: the fit's gradient norm, the solver and its accuracy diagnostics
        (and, for deep models, why ``auto`` chose that solver)."""
        scorer = self.scorer
        if scorer is None or getattr(scorer, "_solver", None) is None:
            return []
        fit = scorer.fit_summary
        over = "" if fit.gradient_over == "all parameters" else f" over {fit.gradient_over}"
        lines = [f"fit: {fit.model}, {fit.n_parameters:,} parameters, ‖∇J‖{over} = {fit.gradient_norm:.1e}"]
        scope = getattr(scorer, "parameter_scope", None)
        if scope is not None:
            lines.append(scope.describe())
        choice = getattr(scorer, "solver_choice", None)
        if choice is not None:
            lines.append(choice.describe())
        lines.append(f"solver {scorer.solver.describe()}")
        return lines


SKIPPED_SHOWN = 5  # skipped tasks named one per line in the summary (all of them in --json)


def skipped_lines(skipped: dict[Any, str], limit: int = SKIPPED_SHOWN) -> list[str]:
    """The summary's lines about tasks left out because their input could not be read: a count with their
    ids, then the reason of the first ``limit`` (each reason names its task)."""
    if not skipped:
        return []
    ids = sorted(skipped)
    lines = [f"skipped {len(ids)} labeled tasks whose input could not be read (task ids {_preview(ids)}):"]
    lines += [f"  {skipped[task_id]}" for task_id in ids[:limit]]
    if len(ids) > limit:
        lines.append(f"  … and {len(ids) - limit} more (all of them in --json)")
    return lines


def _preview(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(task_id) for task_id in ids[:limit])
    return shown + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


@contextmanager
def stage_timer(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started


def pull_labeled(
    connector: Any, project_id: int, control: str | None = None, progress: bool = False
) -> LabeledDataset:
    """The pull stage: the project's labeled items; InputError when no task has a usable label."""
    dataset = connector.pull(project_id, control=control, progress=progress)
    skipped = getattr(dataset, "skipped", None) or {}
    if len(dataset) == 0 and skipped:
        first = min(skipped)
        raise InputError(
            f"project {project_id}: the input of every labeled task could not be read ({len(skipped)} "
            f"skipped; the first: {skipped[first]}); fix the task data"
        )
    if len(dataset) == 0:
        raise InputError(
            f"project {project_id} has no labeled tasks ({len(dataset.unlabeled_ids)} tasks without a usable "
            "label); annotate some tasks first"
        )
    return dataset


def score_dataset(
    dataset: LabeledDataset, settings: AuditSettings, seconds: dict[str, float], progress: bool = False
) -> tuple[Any, pd.DataFrame, int, Any]:
    """The choose (``model="auto"``), featurize, fit and score stages: (the fitted scorer, its scores, the
    feature count, the :class:`relabel.models.choice.ModelChoice` or None when the model was named); then,
    with ``settings.folds`` ≥ 2, the out-of-fold stage: ``scorer.out_of_fold`` is set to the
    :class:`relabel.out_of_fold.OutOfFold` probabilities behind the error estimate and the tiers."""
    from relabel.featurizers import featurize
    from relabel.models.choice import AUTO, choose_model
    from relabel.scorer import SuspicionScorer

    model, features, choice = settings.model, settings.features, None
    if model == AUTO:
        with stage_timer(seconds, "choose"):
            choice = choose_model(dataset, settings, budget_seconds=settings.auto_budget_seconds)
        model = choice.model
        features = choice.features if dataset.kind in ("text", "image") else features
    with stage_timer(seconds, "featurize"):
        X, image_shape = featurize(
            dataset,
            model,
            image_size=settings.image_size,
            features=features,
            device=settings.device,
            progress=progress,
        )
    options: dict[str, Any] = {} if image_shape is None else {"image_shape": image_shape}
    scorer = SuspicionScorer(
        model=model,
        seed=settings.seed,
        l2=settings.l2,
        device=settings.device,
        progress=progress,
        influence_parameters=settings.influence_parameters,
        **options,
    )
    with stage_timer(seconds, "fit"):
        scorer.fit(X, list(dataset.labels), classes=list(dataset.classes), item_ids=list(dataset.ids))
    with stage_timer(seconds, "score"):
        scores = scorer.scores(settings.score_methods())
    if settings.folds:
        from relabel.out_of_fold import out_of_fold

        with stage_timer(seconds, "out-of-fold"):
            scorer.out_of_fold = out_of_fold(
                X,
                scorer.y,
                len(dataset.classes),
                folds=settings.folds,
                l2=settings.l2,
                seed=settings.seed,
                audited_model=model,
                warm_start=getattr(scorer, "logistic_fit", None),
            )
    return scorer, scores, int(np.prod(X.shape[1:])), choice


def run_audit(
    connector: Any,
    project_id: int,
    settings: AuditSettings | None = None,
    *,
    push: bool = True,
    report_dir: str | Path | None = None,
    progress: bool = True,
) -> AuditResult:
    """Pull ``project_id`` through ``connector``, rank its labeled items, push the top ones for review.

    ``settings``: what to fit, score and flag (defaults: :class:`AuditSettings`). ``push=False`` ranks
    without writing to Label Studio; ``report_dir``: also write the HTML report and the ranking files.
    The pull runs before the project's write lease is taken (the fit may be long); under the lease the
    project is checked against the mark taken before the pull and, if it changed, pulled and ranked again
    before anything is pushed (:func:`push_ranked`).
    Raises :class:`relabel.errors.RelabelError` subclasses for anything the user can fix.
    """
    settings = settings or AuditSettings()
    seconds: dict[str, float] = {}
    mark = read_mark(connector, project_id) if push else None
    with stage_timer(seconds, "pull"):
        dataset = pull_labeled(connector, project_id, settings.control, progress)
    return audit_dataset(
        connector,
        project_id,
        dataset,
        settings,
        push=push,
        report_dir=report_dir,
        progress=progress,
        seconds=seconds,
        mark=mark,
        reread=lambda: (pull_labeled(connector, project_id, settings.control, progress), ()),
    )


def mark_review_states(table: pd.DataFrame, states: dict[int, str]) -> None:
    """Add (in place) the ``review_state`` column: each flagged item's state in the review project when the
    push read it (``reviewed``, ``skipped`` or ``pending``; empty for the other rows and in view mode), for
    the report's marks and ``ranking.csv``."""
    if states:
        table["review_state"] = [states.get(int(task_id), "") for task_id in table["task_id"]]


@dataclass
class RankedItems:
    """The score, select and triage stages on one pulled dataset: the fitted scorer, the ranking table with
    the triage columns, the triage, the flagged items, the feature count and what ``model="auto"`` chose."""

    dataset: LabeledDataset
    scorer: Any
    table: pd.DataFrame
    triage: Any
    items: list[Any]
    n_features: int
    model_choice: Any = None


def rank_dataset(
    dataset: LabeledDataset,
    settings: AuditSettings,
    seconds: dict[str, float],
    progress: bool,
    excluded: Collection[int] = (),
) -> RankedItems:
    """Featurize, fit, score, pick the items to flag (``excluded`` never) and triage them."""
    from relabel.report import ARCHIVE_TOP
    from relabel.selection import flagged_items, number_to_flag, ranking_table
    from relabel.triage import triage_audit

    scorer, scores, n_features, choice = score_dataset(dataset, settings, seconds, progress)
    n_flagged = number_to_flag(len(dataset), settings.top, settings.top_fraction)
    table = ranking_table(dataset, scores, settings.method, n_flagged, excluded=excluded)
    with stage_timer(seconds, "triage"):
        triage = triage_audit(
            table,
            dataset,
            scorer,
            explain_top=max(settings.explain_top, ARCHIVE_TOP),
            out_of_fold=getattr(scorer, "out_of_fold", None),
        )
    items = with_evidence(flagged_items(triage.table), triage.explanations)  # the reasons a reviewer sees
    return RankedItems(dataset, scorer, triage.table, triage, items, n_features, choice)


def read_mark(connector: Any, project_id: int) -> Any:
    """The connector's mark of the project before a read (None for a connector that cannot tell)."""
    reader = getattr(connector, "read_mark", None)
    return None if reader is None else reader(project_id)


def write_lease(connector: Any, project_id: int, command: str) -> Any:
    """The connector's write lease of the project for a ``with`` block (none for a connector without)."""
    lease = getattr(connector, "lease", None)
    return nullcontext() if lease is None else lease(project_id, command)


Reread = Callable[[], tuple[LabeledDataset, Collection[int]]]


def push_ranked(
    connector: Any,
    project_id: int,
    ranked: RankedItems,
    settings: AuditSettings,
    *,
    seconds: dict[str, float],
    progress: bool,
    mark: Any = None,
    reread: Reread | None = None,
) -> tuple[RankedItems, Any, bool]:
    """Push ``ranked``'s items under the project's write lease. The data it decides on is read under that
    lease: when the project changed since ``mark`` (taken before the pull; e.g. ``relabel accept`` or
    ``sync`` ran meanwhile), ``reread()`` pulls again (dataset and excluded ids) and the items are ranked
    again before anything is written. Returns (what was pushed, the push result, whether it re-read)."""
    from relabel.selection import flag_basis

    reread_done = False
    with write_lease(connector, project_id, "audit"):
        if mark is not None and reread is not None and connector.changed_since(project_id, mark):
            with stage_timer(seconds, "pull"):
                dataset, excluded = reread()
            ranked = rank_dataset(dataset, settings, seconds, progress, excluded)
            reread_done = True
        with stage_timer(seconds, "push"):
            pushed = connector.push(
                project_id,
                ranked.items,
                mode=settings.queue,
                method=settings.method,
                control=settings.control,
                progress=progress,
                write_mislabeling=settings.write_mislabeling,
                basis=flag_basis(len(ranked.dataset), settings.top, settings.top_fraction),
            )
        mark_review_states(ranked.table, getattr(pushed, "review_states", None) or {})
    return ranked, pushed, reread_done


def audit_dataset(
    connector: Any,
    project_id: int,
    dataset: LabeledDataset,
    settings: AuditSettings,
    *,
    push: bool = True,
    report_dir: str | Path | None = None,
    progress: bool = False,
    excluded: Collection[int] = (),
    report_title: str | None = None,
    report_summary: Callable[[list[int]], dict[str, Any]] | None = None,
    seconds: dict[str, float] | None = None,
    mark: Any = None,
    reread: Reread | None = None,
) -> AuditResult:
    """:func:`run_audit` after the pull: ``dataset`` is the project's pulled items. ``excluded``: task ids
    that may not be flagged (the nightly run's reviewed items); the next items in rank order take their
    places. ``report_title``: the report's title; ``report_summary``: flagged task ids → extra lines for the
    report's summary. ``mark``/``reread``: see :func:`push_ranked` (the push decides on data read under
    the write lease)."""
    seconds = {} if seconds is None else seconds
    ranked = rank_dataset(dataset, settings, seconds, progress, excluded)
    push_result, reread_done = None, False
    if push:
        ranked, push_result, reread_done = push_ranked(
            connector,
            project_id,
            ranked,
            settings,
            seconds=seconds,
            progress=progress,
            mark=mark,
            reread=reread,
        )
    dataset, items = ranked.dataset, ranked.items
    report_path = None
    if report_dir is not None:
        from relabel.report import write_audit_report

        with stage_timer(seconds, "report"):
            paths = write_audit_report(
                report_dir,
                dataset,
                ranked.scorer,
                ranked.table,
                method=settings.method,
                n_flagged=len(items),
                explain_top=settings.explain_top,
                triage=ranked.triage,
                model_choice=ranked.model_choice,
                title=report_title,
                summary=None if report_summary is None else report_summary([item.task_id for item in items]),
            )
        report_path = paths["report_html"]
    source = dataset.source or {}
    return AuditResult(
        project_id=int(project_id),
        settings=settings,
        n_tasks=int(source.get("n_tasks", len(dataset) + len(dataset.unlabeled_ids))),
        n_labeled=len(dataset),
        n_unlabeled=len(dataset.unlabeled_ids),
        n_features=ranked.n_features,
        flagged_task_ids=[item.task_id for item in items],
        ranking=ranked.table,
        push=push_result,
        url=None if push_result is None else push_result.url,
        seconds=seconds,
        report_path=report_path,
        dataset=dataset,
        scorer=ranked.scorer,
        triage=ranked.triage,
        reread=reread_done,
        model_choice=ranked.model_choice,
    )
