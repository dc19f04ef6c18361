"""The settings of one audit, declared once: the CLI flags, the nightly TOML keys and the Python API all map
onto :class:`AuditSettings`, which validates itself when it is made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from relabel.errors import InputError
from relabel.featurizers import FEATURE_SETS
from relabel.methods import INFLUENCE_SCOPES, MODEL_NAMES, SCORE_METHODS

QUEUE_MODES = ("view", "project")


@dataclass(frozen=True)
class AuditSettings:
    """What one audit does (every field has a default a user need not change).

    model:             logistic (exact self-influence), mlp or cnn (damped, iterative solver); see
                       :data:`relabel.methods.MODELS`.
    method:            the score that picks the flagged items (self_influence, loss, margin, random).
    top:               flag this many items; top_fraction: flag this share (rounded up); neither: 5 %.
    queue:             "project" (default: a separate review project in rank order, the suggestion
                       pre-filled: the queue a reviewer can work through in Label Studio Community) or
                       "view" (predictions + a Data Manager tab in the project itself).
    control:           the <Choices> control holding the label, when the labeling config has several.
    image_size:        side length in pixels images are resized to before featurizing (None: 8 for the
                       pixel features of logistic/mlp, 28 for the CNN).
    l2:                λ, the L2 weight on all parameters (dimensionless, on the mean loss).
    seed:              seed for model initialisation and the random baseline.
    write_mislabeling: view mode: also write each prediction's ``mislabeling`` field (one request each).
    explain_top:       supporting/opposing items shown per flagged item in the report.
    features:          text features: "auto" (sentence embeddings when the ``text`` extra is installed,
                       else TF-IDF), "embeddings" or "tfidf"; see :mod:`relabel.featurizers`.
    device:            torch device for the embedding model and deep models, e.g. "cpu" or "cuda".
    influence_parameters: mlp/cnn: self-influence over "all" parameters, the "last" layer, or "auto" (all
                       when that is estimated to take ≤ 2 min, else the last layer; see
                       :mod:`relabel.influence.scope`).
    """

    model: str = "logistic"
    method: str = "self_influence"
    top: int | None = None
    top_fraction: float | None = None
    queue: str = "project"
    control: str | None = None
    image_size: int | None = None
    l2: float = 1e-3
    seed: int = 0
    write_mislabeling: bool = True
    explain_top: int = 3
    features: str = "auto"
    device: str = "cpu"
    influence_parameters: str = "auto"

    def __post_init__(self) -> None:
        _one_of("model", self.model, MODEL_NAMES)
        _one_of("method", self.method, SCORE_METHODS)
        _one_of("queue", self.queue, QUEUE_MODES)
        _one_of("features", self.features, FEATURE_SETS)
        _one_of("influence_parameters", self.influence_parameters, INFLUENCE_SCOPES)
        if self.top is not None and self.top_fraction is not None:
            raise InputError("give top (an item count) or top_fraction (a share), not both")
        if self.top is not None and (not isinstance(self.top, int) or self.top < 1):
            raise InputError(f"top must be a whole number ≥ 1; got {self.top!r}")
        if self.top_fraction is not None and not 0 < float(self.top_fraction) <= 1:
            raise InputError(f"top_fraction must be in (0, 1]; got {self.top_fraction!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise InputError(f"image_size must be a whole number of pixels ≥ 1; got {self.image_size!r}")
        if not float(self.l2) > 0:
            raise InputError(f"l2 must be > 0; got {self.l2!r}")
        if not isinstance(self.explain_top, int) or self.explain_top < 0:
            raise InputError(f"explain_top must be a whole number ≥ 0; got {self.explain_top!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The field names (the TOML keys of a nightly project that configure the audit)."""
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "settings") -> AuditSettings:
        """Settings from a mapping of field names (TOML, argparse); unknown keys are an InputError."""
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise InputError(f"{where}: unknown setting(s) {unknown}; known: {', '.join(cls.keys())}")
        try:
            return cls(**values)
        except InputError as error:
            raise InputError(f"{where}: {error}") from None

    def fingerprint(self) -> str:
        """A hash of the settings that change which items are flagged (not of how the report looks)."""
        ignored = ("explain_top", "device")
        relevant = {key: value for key, value in asdict(self).items() if key not in ignored}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def score_methods(self) -> tuple[str, ...]:
        """The methods one audit computes: the chosen one, plus loss (shown beside it) when it is another."""
        return (self.method,) if self.method == "loss" else (self.method, "loss")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
