"""Command-line option groups shared by the subcommands, declared once: connection (Label Studio), file
columns, model and progress; and how they become a connector, :class:`relabel.settings.AuditSettings` and a
progress switch.

Every flag that sets an audit setting is made from its :class:`relabel.settings.AuditSettings` field by
:func:`add_setting` (type, choices, default and help all read from the field), so the flag, the nightly
TOML key and the Python API cannot disagree; :func:`settings_from_args` reads them back with
:meth:`AuditSettings.from_mapping`.

Deprecated spellings still accepted for one release (with a note on stderr): ``--no-progress`` and
``--quiet`` (now ``--quiet`` everywhere; ``--no-progress`` is the old spelling).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from relabel.errors import RelabelError
from relabel.featurizers import FEATURE_SETS
from relabel.settings import AuditSettings

URL_ENV = "LABEL_STUDIO_URL"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"

CONNECTION_HELP = f"""
connection:
  The server URL comes from --url or ${URL_ENV}; the API token from --api-key-file (a file holding
  only the token) or ${API_KEY_ENV}. Use a Personal Access Token (Account & Settings → Personal Access
  Token) or, where the organization allows them, a legacy token. The token is never printed. The URL
  is the server's base URL only: one carrying a user:password@ part, a query string or a fragment (where a
  token would be pasted) is refused before anything is sent, and never echoed.
"""


def add_connection_options(parser: argparse.ArgumentParser, *, project_required: bool = True) -> None:
    """``--url``, ``--project``, ``--api-key-file``: where the Label Studio project is and how to log in."""
    group = parser.add_argument_group("Label Studio")
    group.add_argument(
        "--url",
        default=None,
        help=f"Label Studio base URL, e.g. http://localhost:8080 (default: ${URL_ENV}); a URL with a "
        "user:password@ part, a query string or a fragment is refused before any request",
    )
    group.add_argument(
        "--project", type=int, required=project_required, metavar="ID", help="the project id (in its URL)"
    )
    group.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"file holding only the API token; without it the token is read from ${API_KEY_ENV}",
    )
    add_setting(group, "control")


def setting_fields() -> dict[str, dataclasses.Field]:
    """The :class:`AuditSettings` fields by name."""
    return {item.name: item for item in dataclasses.fields(AuditSettings)}


def setting_flag(name: str) -> str:
    """The command-line spelling of the setting ``name`` (``--top-fraction``, ``--no-mislabeling-field``)."""
    return setting_fields()[name].metadata.get("flag") or "--" + name.replace("_", "-")


def setting_default_text(name: str) -> str:
    """What ``--help`` prints as the setting's default: the field's default value, or (a None default) what
    None means, from the field's ``default_text``."""
    item = setting_fields()[name]
    if item.default is None:
        return str(item.metadata.get("default_text") or "none")
    if isinstance(item.default, bool):
        return "on" if item.default else "off"
    return str(item.default)


def add_setting(container: Any, name: str, **overrides: Any) -> argparse.Action:
    """Add the flag of the :class:`AuditSettings` field ``name`` to ``container`` (a parser or group).

    Type from the field's annotation (``int | None`` → int), choices, metavar and help from its metadata,
    ``default`` the field's default, ``dest`` the field's name, and the help ending in "(default: …)" from
    :func:`setting_default_text`. A boolean whose default is True becomes a ``--no-…`` flag that sets it
    False. ``overrides`` go to ``add_argument`` as they are (e.g. a subcommand's own default).
    """
    item = setting_fields()[name]
    meta = item.metadata
    kind = _setting_type(name)
    help_text = f"{meta['help']} (default: {setting_default_text(name)})"
    options: dict[str, Any] = {"dest": name, "default": item.default}
    if kind is bool:
        options["action"] = "store_false" if item.default else "store_true"
        help_text = f"{meta['help']}; this flag turns it {'off' if item.default else 'on'} " + (
            f"(default: {setting_default_text(name)})"
        )
    elif meta.get("choices") is not None:
        options["choices"] = meta["choices"]
    else:
        options["type"] = kind
    if meta.get("metavar"):
        options["metavar"] = meta["metavar"]
    options["help"] = help_text.replace("%", "%%")
    options.update(overrides)
    return container.add_argument(setting_flag(name), **options)


def _setting_type(name: str) -> type:
    """The scalar type of a setting (``int | None`` → int)."""
    import types
    import typing

    hint = typing.get_type_hints(AuditSettings)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def settings_from_args(args: argparse.Namespace, **fixed: Any) -> AuditSettings:
    """The :class:`AuditSettings` the flags of ``args`` describe (every field the parser has a flag for;
    ``fixed`` adds or replaces values), validated once, by :meth:`AuditSettings.from_mapping`."""
    names = AuditSettings.keys()
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    values.update(fixed)
    return AuditSettings.from_mapping(values, "command-line options")


def add_file_options(parser: argparse.ArgumentParser, *, data_required: bool) -> None:
    """DATA and the file's columns (label, id, text, features)."""
    parser.add_argument(
        "data",
        nargs=None if data_required else "?",
        type=Path,
        help="CSV, TSV, Parquet or JSONL file with a label column (one value a cell: a list, a struct, or a "
        "date used as a feature is refused with the file, column and row)",
    )
    group = parser.add_argument_group("file columns")
    group.add_argument(
        "--label-column", default="label", help="column holding the given label (default: label)"
    )
    group.add_argument("--id-column", help="column of unique item ids (default: the row position from 0)")
    group.add_argument(
        "--text-column",
        help="column holding the item's text, featurized as --features says (default: none: the file is "
        "tabular)",
    )
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
    """``--l2``, ``--features``, ``--device`` and (each optionally) ``--model``, ``--method``, ``--seed``,
    ``--image-size``, ``--influence-parameters``: each made from its :class:`AuditSettings` field.
    With ``--model`` comes ``--auto-budget`` (the seconds ``--model auto`` may spend choosing)."""
    group = parser.add_argument_group("model")
    names = [
        name
        for name, wanted in (
            ("model", model),
            ("method", method),
            ("l2", True),
            ("seed", seed),
            ("image_size", image_size),
            ("influence_parameters", model),
            ("auto_budget_seconds", model),
        )
        if wanted
    ]
    for name in names:
        add_setting(group, name)
    add_feature_options(group, several=several_features)


def add_feature_options(group: Any, *, several: bool = False) -> None:
    """``--features`` (text features) and ``--device`` (torch device for embeddings and deep models)."""
    if several:
        group.add_argument(
            "--features",
            default=setting_fields()["features"].default,
            metavar="SETS",
            help=f"text features to compare, comma-separated among {', '.join(FEATURE_SETS)}, e.g. "
            f"tfidf,embeddings (default: {setting_default_text('features')})",
        )
    else:
        add_setting(group, "features")
    add_setting(group, "device")


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
    from connectors.label_studio.client import read_api_key, server_base_url

    url = args.url or os.environ.get(URL_ENV, "").strip()
    if not url:
        raise RelabelError(
            f"no Label Studio URL: pass --url URL or set {URL_ENV} (e.g. http://localhost:8080)"
        )
    api_key = read_api_key(args.api_key_file)
    url = server_base_url(url, "--url" if args.url else f"${URL_ENV}", secrets=(api_key,))  # before a request
    return LabelStudioConnector(url, api_key)
