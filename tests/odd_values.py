"""Odd input for the tests of issue 23 part 5: seeded generators of values relabel must refuse or read (never
crash on), the checks every command's output must pass, and a valid audit report folder to damage.

Used by ``tests/test_odd_input.py`` (one test per named case) and ``tests/test_fuzz_input.py`` (seeded
fuzzing of every input path).
"""

from __future__ import annotations

import datetime
import json
import random
import re
import string
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.cli import main

TOKEN = "f3a9c41d77e0b25a9d6c13e8f0b47a2c5d91e6b3"  # the API token every test hands to relabel
OTHER_TOKEN = "7be2d05c9a14f86e3b0d2c71a5e94f08d6c3b1a2"  # a token pasted into a URL (not the API token)
NUMPY_REPR = re.compile(r"\b(np\.[A-Za-z_0-9]+|array)\(")


def shows_part_of(text: str, secret: str, width: int = 8) -> bool:
    """True when ``text`` holds any ``width``-character piece of ``secret``."""
    return any(secret[start : start + width] in text for start in range(len(secret) - width + 1))


def run_cli(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``relabel ARGS`` in this process: (exit code, stdout, stderr). An exception that escapes ``main``
    (what a person would see as a traceback) fails the test with the arguments that caused it."""
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse errors
        code = int(exit_.code or 0)
    except Exception as error:
        captured = capsys.readouterr()
        raise AssertionError(
            f"relabel {' '.join(args)} raised {type(error).__name__}: {error} (stderr: {captured.err!r})"
        ) from error
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_outcome(code: int, out: str, err: str, case: str, secrets: tuple[str, ...] = (TOKEN,)) -> None:
    """The contract for odd input: exit 0 or 2; an error is exactly one line on stderr; no traceback, no
    NumPy repr, no piece of a secret anywhere."""
    assert code in (0, 2), f"{case}: exit code {code}; stderr: {err!r}"
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("relabel: error: "), f"{case}: stderr {err!r}"
    both = out + err
    assert "Traceback" not in both, f"{case}: {both[-2000:]}"
    assert not NUMPY_REPR.search(both), f"{case}: a NumPy repr in {both[-500:]!r}"
    for secret in secrets:
        assert not shows_part_of(both, secret), f"{case}: a piece of the token in {both[-500:]!r}"


# ------------------------------------------------------------------------------------------ odd values
def odd_value(rng: random.Random) -> Any:
    """One value of a kind a cell, a task field or a JSON record may hold that relabel must not crash on."""
    kinds = [
        lambda: [rng.random(), rng.random()],  # a list
        lambda: [[1, 2], [3]],  # nested lists
        lambda: {"a": rng.randint(0, 9), "b": "x"},  # a struct
        lambda: {},
        lambda: [],
        lambda: None,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: -float("inf"),
        lambda: 10**30,  # beyond int64
        lambda: -(2**63),
        lambda: rng.choice([True, False]),
        lambda: "",
        lambda: " ",
        lambda: "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 12))),
        lambda: "\u202e\u0000\ud7ff漢字",
        lambda: '=HYPERLINK("x")',
        lambda: "1e309",
        lambda: "3.5",
        lambda: "x" * 5000,
        lambda: datetime.datetime(2024, 1, rng.randint(1, 28), 12, 0),
        lambda: datetime.date(2023, 5, 4),
        lambda: datetime.timedelta(days=rng.randint(1, 9)),
        lambda: b"\x00\xffbinary",
        lambda: rng.randint(-5, 5),
        lambda: rng.uniform(-1e6, 1e6),
    ]
    return rng.choice(kinds)()


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it (dates as ISO text, bytes as latin-1 text, non-finite floats kept:
    Python's json writes NaN/Infinity, as some tools do)."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def base_frame(rng: random.Random, n: int = 36) -> pd.DataFrame:
    """A small, valid labeled table: ``id``, two numeric features ``f1``/``f2``, ``text``, ``label`` (3
    classes that the features separate, so every command succeeds on it unchanged)."""
    labels = np.array(["cat", "dog", "fox"])[np.arange(n) % 3]
    centre = {"cat": 0.0, "dog": 3.0, "fox": 6.0}
    f1 = [centre[label] + rng.gauss(0, 1) for label in labels]
    f2 = [rng.gauss(0, 1) for _ in labels]
    words = {"cat": "meow purr", "dog": "woof bark", "fox": "sly red"}
    return pd.DataFrame(
        {
            "id": np.arange(100, 100 + n),
            "f1": f1,
            "f2": f2,
            "text": [f"{words[label]} {i}" for i, label in enumerate(labels)],
            "label": labels,
        }
    )


def write_table(frame: pd.DataFrame, path: Path) -> bool:
    """Write ``frame`` in the format ``path``'s suffix names; False when that format cannot hold the values
    (e.g. Parquet and a column mixing lists and numbers): such a file cannot exist, so there is no case."""
    import pyarrow

    try:
        if path.suffix in (".csv", ".tsv"):
            frame.to_csv(path, index=False, sep="," if path.suffix == ".csv" else "\t")
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            lines = [
                json.dumps({key: jsonable(value) for key, value in record.items()})
                for record in frame.to_dict(orient="records")
            ]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError, pyarrow.ArrowException):
        return False
    return True


# ------------------------------------------------------------------------------------------ report folder
def write_report_folder(folder: Path, seed: int = 5) -> list[int]:
    """A real audit report folder (``write_audit_report`` on a small text dataset); returns the flagged
    ids."""
    from relabel.dataset import LabeledDataset
    from relabel.report import write_audit_report
    from relabel.scorer import SuspicionScorer
    from relabel.selection import ranking_table

    rng = np.random.default_rng(seed)
    n, d = 90, 4
    centres = rng.normal(0, 2, size=(3, d))
    y = np.arange(n) % 3
    X = centres[y] + rng.normal(0, 1, size=(n, d))
    y[::15] = (y[::15] + 1) % 3
    classes = ["cat", "dog", "fox"]
    ids = np.arange(3000, 3000 + n)
    dataset = LabeledDataset(
        ids=ids,
        inputs=[f"text of item {i}" for i in ids],
        kind="text",
        labels=np.array([classes[k] for k in y], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
        source={"type": "label_studio", "url": "http://ls.test:8080", "project_id": 4, "project_title": "t"},
    )
    scorer = SuspicionScorer(l2=0.05).fit(X, list(dataset.labels), classes=classes)
    table = ranking_table(dataset, scorer.scores(("self_influence", "loss")), "self_influence", 9)
    write_audit_report(folder, dataset, scorer, table, method="self_influence", n_flagged=9)
    return [int(item) for item in table.loc[table["flagged"], "task_id"]]
