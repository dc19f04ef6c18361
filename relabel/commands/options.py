"""Command-line option groups shared by the subcommands, declared once: connection (Label Studio), file
columns, model and progress; and how they become a connector, :class:`relabel.settings.AuditSettings` and a
progress switch.

Deprecated spellings still accepted for one release (with a note on stderr): ``--no-progress`` and
``--quiet`` (now ``--quiet`` everywhere; ``--no-progress`` is the old spelling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from relabel.errors import RelabelError
from relabel.featurizers import FEATURE_SETS
from relabel.methods import INFLUENCE_SCOPES, METHODS, MODEL_NAMES, MODELS, SCORE_METHODS, describe

URL_ENV = "LABEL_STUDIO_URL"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"

CONNECTION_HELP = f"""
connection:
  The server URL comes from --url or ${URL_ENV}; the API token from --api-key-file (a file holding
  only the token) or ${API_KEY_ENV}. Use a Personal Access Token (Account & Settings → Personal Access
  Token) or, where the organization allows them, a legacy token. The token is never printed.
"""


def add_connection_options(parser: argparse.ArgumentParser, *, project_required: bool = True) -> None:
    """``--url``, ``--project``, ``--api-key-file``: where the Label Studio project is and how to log in."""
    group = parser.add_argument_group("Label Studio")
    group.add_argument(
        "--url", default=None, help=f"Label Studio base URL, e.g. http://localhost:8080 (default: ${URL_ENV})"
    )
    group.add_argument(
        "--project", type=int, required=project_required, metavar="ID", help="the project id (in its URL)"
    )
    group.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"file holding only the API token (default: ${API_KEY_ENV})",
    )
    group.add_argument(
        "--control",
        metavar="NAME",
        help="the <Choices> control holding the label, when the labeling config has several",
    )


def add_file_options(parser: argparse.ArgumentParser, *, data_required: bool) -> None:
    """DATA and the file's columns (label, id, text, features)."""
    parser.add_argument(
        "data",
        nargs=None if data_required else "?",
        type=Path,
        help="CSV, TSV, Parquet or JSONL file with a label column",
    )
    group = parser.add_argument_group("file columns")
    group.add_argument(
        "--label-column", default="label", help="column holding the given label (default: label)"
    )
    group.add_argument("--id-column", help="column of unique item ids (default: the row position from 0)")
    group.add_argument("--text-column", help="column holding text (TF-IDF features); default: tabular")
    group.add_argument(
        "--feature-columns", help="comma-separated numeric feature columns (default: every other column)"
    )


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    model: bool = True,
    method: bool = True,
    seed: bool = True,
    image_size: bool = True,
    several_features: bool = False,
) -> None:
    """``--l2``, and (each optionally) ``--model``, ``--method``, ``--seed``, ``--image-size``."""
    group = parser.add_argument_group("model")
    if model:
        group.add_argument(
            "--model", choices=MODEL_NAMES, default="logistic", help=f"{describe(MODELS)} (default: logistic)"
        )
    if method:
        group.add_argument(
            "--method",
            choices=SCORE_METHODS,
            default="self_influence",
            help=f"score that picks the flagged items: {describe(METHODS, SCORE_METHODS)} "
            "(default: self_influence)",
        )
    group.add_argument(
        "--l2", type=float, default=1e-3, help="λ, L2 weight on all parameters (default: 1e-3)"
    )
    if seed:
        group.add_argument(
            "--seed", type=int, default=0, help="seed for model fitting and baselines (default: 0)"
        )
    if image_size:
        group.add_argument(
            "--image-size", type=int, metavar="PX", help="resize images to PX×PX before featurizing"
        )
    if model:
        group.add_argument(
            "--influence-parameters",
            choices=INFLUENCE_SCOPES,
            default="auto",
            help="mlp/cnn: self-influence over all parameters, the last layer, or auto = all when that is "
            "estimated to take ≤ 2 min, else the last layer (default: auto)",
        )
    add_feature_options(group, several=several_features)


def add_feature_options(group: Any, *, several: bool = False) -> None:
    """``--features`` (text features) and ``--device`` (torch device for embeddings and deep models)."""
    if several:
        group.add_argument(
            "--features",
            default="auto",
            metavar="SETS",
            help="text features to compare, comma-separated among auto, embeddings, tfidf, e.g. "
            "tfidf,embeddings (default: auto = embeddings when the text extra is installed, else TF-IDF)",
        )
    else:
        group.add_argument(
            "--features",
            choices=FEATURE_SETS,
            default="auto",
            help="text features: embeddings (sentence embeddings, needs `pip install 'relabel[text]'`), "
            "tfidf, or auto = embeddings when installed, else TF-IDF (default: auto)",
        )
    group.add_argument(
        "--device", default="cpu", help="torch device for text embeddings and mlp/cnn models (default: cpu)"
    )


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bars; the old spelling ``--no-progress`` still works)."""
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (they are shown only on a terminal anyway)"
    )
    parser.add_argument("--no-progress", action="store_true", dest="no_progress", help=argparse.SUPPRESS)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON object (the summary's numbers and URLs) on stdout instead of text."""
    parser.add_argument(
        "--json",
        action="store_true",
        dest="json",
        help="print one JSON object with the summary's numbers and URLs on stdout instead of text",
    )


def print_json(payload: Any) -> None:
    """Print ``payload`` as one JSON object on stdout (numpy scalars, paths, dataclasses as plain values)."""
    print(json.dumps(_finite(payload), default=_json_default, allow_nan=False))


def _finite(value: Any) -> Any:
    """NaN and ±inf → None (strict JSON), recursively through dicts and lists."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    import dataclasses

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on stderr: only on a terminal, not with ``--quiet`` (or the old ``--no-progress``)."""
    if getattr(args, "no_progress", False):
        print("relabel: note: --no-progress is deprecated; use --quiet", file=sys.stderr)
    quiet = getattr(args, "quiet", False) or getattr(args, "no_progress", False)
    return not quiet and sys.stderr.isatty()


def connector_from_args(args: argparse.Namespace) -> Any:
    """A :class:`connectors.label_studio.LabelStudioConnector` for the ``--url`` and token of ``args``."""
    from connectors.label_studio import LabelStudioConnector
    from connectors.label_studio.client import read_api_key

    url = args.url or os.environ.get(URL_ENV, "").strip()
    if not url:
        raise RelabelError(
            f"no Label Studio URL: pass --url URL or set {URL_ENV} (e.g. http://localhost:8080)"
        )
    return LabelStudioConnector(url, read_api_key(args.api_key_file))
