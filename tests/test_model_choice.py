"""``model="auto"``: candidates by data kind, chosen by out-of-fold log-loss within a time budget."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_wine
from sklearn.model_selection import StratifiedKFold

from relabel.dataset import LabeledDataset
from relabel.logistic import fit_logistic
from relabel.models.choice import (
    MARGIN,
    MIN_ITEMS,
    CandidateScore,
    candidates_for,
    choose_model,
    pick_candidate,
)
from relabel.settings import AuditSettings


def dataset(inputs: object, kind: str, labels: np.ndarray) -> LabeledDataset:
    classes = [str(k) for k in range(int(labels.max()) + 1)]
    ids = np.arange(1, len(labels) + 1)
    return LabeledDataset(
        ids=ids,
        inputs=inputs,
        kind=kind,
        labels=np.array([classes[k] for k in labels], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
    )


def digit_pngs(n_items: int) -> tuple[list[bytes], np.ndarray]:
    X, y = load_digits(return_X_y=True)
    encoded = []
    for row in X[:n_items]:
        buffer = io.BytesIO()
        Image.fromarray((row.reshape(8, 8) * 255 / 16).round().astype(np.uint8), mode="L").save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded, y[:n_items]


def test_the_default_is_auto_and_tabular_data_has_one_candidate() -> None:
    assert AuditSettings().model == "auto"
    X, y = load_wine(return_X_y=True)
    choice = choose_model(dataset(pd.DataFrame(X), "tabular", y), AuditSettings())
    assert (choice.model, choice.features, choice.folds) == ("logistic", "tabular", 0)
    assert "only candidate" in choice.describe()


def test_a_small_project_keeps_the_first_candidate_without_measuring() -> None:
    images, y = digit_pngs(MIN_ITEMS - 1)
    project = dataset(images, "image", y)
    assert [c.label for c in candidates_for(project)] == ["logistic on pixels", "cnn on pixels"]
    choice = choose_model(project, AuditSettings())
    assert choice.model == "logistic" and f"fewer than the {MIN_ITEMS}" in choice.reason


def test_out_of_fold_log_loss_matches_a_direct_k_fold_and_the_budget_stops_the_cnn() -> None:
    images, y = digit_pngs(300)
    settings = AuditSettings(seed=4, l2=1e-2)
    choice = choose_model(dataset(images, "image", y), settings, budget_seconds=1e-3)
    logistic, cnn = choice.candidates
    assert choice.model == "logistic" and cnn.skipped is not None and math.isnan(cnn.log_loss)
    assert "estimated" in cnn.skipped or "budget" in cnn.skipped
    # reference: the same stratified folds (seed 4), the closed-form logistic fit on the 8×8 pixels
    X = np.stack([np.asarray(Image.open(io.BytesIO(png)), dtype=float) / 255 for png in images])
    X = X.reshape(len(X), -1)
    held_out = np.zeros((len(y), 10))
    for train, test in StratifiedKFold(3, shuffle=True, random_state=4).split(X, y):
        held_out[test] = fit_logistic(X[train], y[train], 10, l2=1e-2, gradient_tolerance=1e-8).predict_proba(
            X[test]
        )
    reference = -np.log(np.clip(held_out[np.arange(len(y)), y], 1e-15, None)).mean()
    assert logistic.log_loss == pytest.approx(reference, rel=1e-9)
    assert logistic.accuracy == pytest.approx((held_out.argmax(1) == y).mean(), abs=1e-12)
    facts = choice.as_dict()
    assert facts["model"] == "logistic" and facts["candidates"][1]["log_loss"] is None


def test_a_non_convex_candidate_must_beat_the_first_by_the_margin() -> None:
    first = CandidateScore("logistic", "pixels", log_loss=0.50, accuracy=0.9)
    close = CandidateScore("cnn", "pixels", log_loss=0.50 * (1 - MARGIN / 2), accuracy=0.91)
    kept = pick_candidate([first, close], 3, 300.0, 10.0)
    assert kept.model == "logistic" and "keeping the convex model" in kept.reason
    better = CandidateScore("cnn", "pixels", log_loss=0.30, accuracy=0.95)
    chosen = pick_candidate([first, better], 3, 300.0, 10.0)
    assert chosen.model == "cnn" and "0.300 vs 0.500" in chosen.reason
    skipped = CandidateScore("cnn", "pixels", skipped="time budget spent")
    assert pick_candidate([first, skipped], 3, 300.0, 10.0).model == "logistic"
