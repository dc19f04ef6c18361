"""Seeded fuzzing of every input path (issue 23, part 5): generated bad values go through

* files (CSV, TSV, Parquet, JSON Lines) for ``rank``, ``compare`` and ``explain``;
* audit report folders for ``explain --from``;
* Label Studio task data (image, text and tabular projects on the real server) for ``audit``;
* ``--url`` and ``$LABEL_STUDIO_URL`` values;

and every run must end with exit code 0 or 2, exactly one line on stderr for an error, no traceback, no
NumPy repr, and no piece of a token. Commands run in this process (:func:`relabel.cli.main`), as in
``tests/test_rank_cli.py``. The seeds are fixed: a failure names its case and reproduces.

Cases per run (about a minute in all): ``N_FILE_CASES`` files × one command each, ``N_FOLDER_CASES``
damaged report folders, ``N_URL_CASES`` URLs, and ``LS_SEEDS`` × 3 Label Studio projects.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import string
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.odd_values import (
    OTHER_TOKEN,
    TOKEN,
    base_frame,
    check_outcome,
    jsonable,
    odd_value,
    run_cli,
    write_report_folder,
    write_table,
)
from tests.test_odd_input import ConnectionCounter, png

N_FILE_CASES = 60
COMPARE_EVERY = 30  # 2 compare runs among the file cases (they share the file loader with rank)
N_FOLDER_CASES = 40
N_URL_CASES = 60
LS_SEEDS = (0, 1)
FORMATS = (".csv", ".tsv", ".parquet", ".jsonl")
COLUMNS = ("id", "f1", "f2", "text", "label")


# ------------------------------------------------------------------------------------------------- files
def damaged_file(rng: random.Random, folder: Path) -> tuple[Path, str] | None:
    """One generated input file and what was done to it (None when the format cannot hold the values)."""
    frame = base_frame(rng)
    path = folder / f"data{rng.choice(FORMATS)}"
    how = rng.choice(["cells", "cells", "column", "file"])
    if how == "cells":
        column = rng.choice(COLUMNS)
        frame[column] = frame[column].astype(object)
        rows = rng.sample(range(len(frame)), rng.randint(1, 3))
        values = [odd_value(rng) for _ in rows]
        for row, value in zip(rows, values, strict=True):
            frame.at[row, column] = value
        description = f"{path.name}: column {column} rows {rows} = {values!r}"[:300]
    elif how == "column":
        column = rng.choice(COLUMNS)
        value = odd_value(rng)
        frame[column] = pd.Series([value] * len(frame), dtype=object)
        description = f"{path.name}: whole column {column} = {value!r}"[:300]
    else:
        description = f"{path.name}: file damaged"
    if not write_table(frame, path):
        return None
    if how == "file":
        content = path.read_bytes()
        damage = rng.choice(["cut", "junk", "prefix", "foreign", "empty"])
        damaged = {
            "cut": content[: rng.randint(0, max(1, len(content) - 1))],
            "junk": bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000))),
            "prefix": b"\xff\xfe\x00garbage\n" + content,
            "foreign": frame.to_json().encode() if path.suffix != ".jsonl" else b"PAR1\x00\x00",
            "empty": b"",
        }[damage]
        path.write_bytes(damaged)
        description += f" ({damage})"
    return path, description


def file_command(rng: random.Random, path: Path, folder: Path, case: int) -> list[str]:
    """A ``rank``, ``compare`` or ``explain`` command line on ``path`` (tabular or text features); every
    ``COMPARE_EVERY``-th case is ``compare`` (a few seconds each under load: it fits and plots)."""
    text = rng.random() < 0.3
    columns = ["--text-column", "text", "--features", "tfidf"] if text else ["--feature-columns", "f1,f2"]
    command = "compare" if case % COMPARE_EVERY == 0 else rng.choices(["rank", "explain"], weights=[2, 1])[0]
    if command == "rank":
        out = folder / f"ranking{rng.choice(['.csv', '.parquet'])}"
        return ["rank", str(path), "--id-column", "id", *columns, "--out", str(out), "--quiet"]
    if command == "compare":
        return [
            "compare", str(path), *columns, "--seeds", "0", "--methods", "self_influence,loss,random",
            "--checked", "0.1", "--out", str(folder / "compare"), "--quiet",
        ]  # fmt: skip
    item = rng.choice(["105", "100", "7", "x", "1e3"])
    return ["explain", str(path), "--id-column", "id", *columns, "--item", item, "--per-side", "3", "--quiet"]


def test_fuzz_files_through_rank_compare_and_explain(tmp_path: Path, capsys) -> None:
    rng = random.Random(2023)
    ran = refused = 0
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for case in range(N_FILE_CASES):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        generated = damaged_file(rng, folder)
        if generated is None:
            continue
        path, description = generated
        args = file_command(rng, path, folder, case)
        started = time.perf_counter()
        code, out, err = run_cli(args, capsys)
        seconds[args[0]] = seconds.get(args[0], 0.0) + time.perf_counter() - started
        counts[args[0]] = counts.get(args[0], 0) + 1
        check_outcome(code, out, err, f"case {case}: {description}; relabel {' '.join(args[:1])}")
        ran += 1
        refused += code == 2
    print(f"file fuzz: {ran} runs, {refused} refused; seconds by command {seconds}, runs {counts}")
    assert ran >= N_FILE_CASES * 2 // 3 and refused >= ran // 3  # the generator reaches the error paths


# ------------------------------------------------------------------------------------------ report folders
def damage_folder(rng: random.Random, folder: Path) -> str:
    """Damage one file of an audit report folder in a generated way; returns what was done. A case may
    damage twice: the second step works on whatever the first left."""
    present = [
        name for name in ("audit.json", "explain.parquet", "ranking.parquet") if (folder / name).exists()
    ]
    if not present:
        return "every file deleted"
    name = rng.choice(present)
    path = folder / name
    how = rng.choice(
        ["cut", "junk", "delete", "swap", "value"] + (["column"] * 3 if name != "audit.json" else [])
    )
    if how == "cut":
        content = path.read_bytes()
        path.write_bytes(content[: rng.randint(0, len(content) - 1)])
    elif how == "junk":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 500))))
    elif how == "delete":
        path.unlink()
    elif how == "swap":
        others = [other for other in present if other != name]
        path.write_bytes((folder / rng.choice(others)).read_bytes() if others else b"{}")
    elif how == "value" and name == "audit.json":
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(facts, dict)
        except (ValueError, AssertionError):  # damaged by an earlier step of this case
            path.write_text("{")
            return f"{name}: unreadable, replaced by '{{'"
        key = rng.choice([*facts, "format", "task_url"])
        facts[key] = jsonable(odd_value(rng)) if rng.random() < 0.8 else "{nope}"
        path.write_text(json.dumps(facts) if rng.random() < 0.9 else json.dumps([facts]))
        return f"{name}: {key} = {facts[key]!r}"[:200]
    else:
        try:
            table = pd.read_parquet(path)
        except Exception:  # damaged by an earlier step of this case (pyarrow's errors vary): damage further
            path.write_bytes(b"PAR1")
            return f"{name}: unreadable, cut to its magic bytes"
        column = rng.choice(list(table.columns))
        if rng.random() < 0.3:
            table = table.drop(columns=column)
        else:
            value = odd_value(rng)
            table[column] = pd.Series([value] * len(table), dtype=object)
        if not write_table(table, path):
            path.write_bytes(b"")
        return f"{name}: column {column} damaged"
    return f"{name}: {how}"


def test_fuzz_report_folders_through_explain_from(tmp_path: Path, capsys) -> None:
    intact = tmp_path / "intact"
    flagged = write_report_folder(intact)
    rng = random.Random(77)
    refused = 0
    for case in range(N_FOLDER_CASES):
        folder = tmp_path / f"folder{case}"
        shutil.copytree(intact, folder)
        done = [damage_folder(rng, folder) for _ in range(rng.randint(1, 2))]
        item = str(rng.choice(flagged)) if rng.random() < 0.8 else rng.choice(["0", "abc", "3001.0", ""])
        code, out, err = run_cli(["explain", "--from", str(folder), "--item", item], capsys)
        check_outcome(code, out, err, f"folder case {case}: {done}, item {item!r}")
        refused += code == 2
    assert refused >= N_FOLDER_CASES // 2


# ------------------------------------------------------------------------------------------ --url
def bad_url(rng: random.Random, port: int) -> str:
    """A URL relabel must refuse before sending anything: credentials, a query or fragment, or a bad form."""
    host = rng.choice(["127.0.0.1", "localhost", "[::1]"])
    base = f"{rng.choice(['http', 'https', 'HTTP'])}://{host}:{port}{rng.choice(['', '/', '/ls', '/ls/'])}"
    secret = rng.choice([OTHER_TOKEN, TOKEN])
    forms = [
        lambda: f"{base}?token={secret}",
        lambda: f"{base}?{rng.choice(['access_token', 'api_key', 'key', 'x'])}={secret}&page=2",
        lambda: f"{base}#{secret}",
        lambda: f"{base}#access_token={secret}",
        lambda: base.replace("://", f"://{secret}@", 1),
        lambda: base.replace("://", f"://admin:{secret}@", 1),
        lambda: base.replace("://", f"://admin:{secret}@", 1) + f"?t={secret}",
        lambda: f"{base}/{TOKEN}",
        lambda: base.replace(f":{port}", f":{rng.choice(['99999', '-1', 'abc', '8o80', '', '65536'])}") + "?",
        lambda: base.replace(host, rng.choice(["[::1", "[::1]]", "[zz::1]"])),
        lambda: base.replace(base.split("://")[0], rng.choice(["ftp", "file", "javascript", "gopher"])),
        lambda: base + rng.choice([" ", "\t", "\x00", "\x7f", "\u00a0"]) + "x",
        lambda: rng.choice(["http://", "https:///ls", "://", "http://:80"]),
    ]
    return rng.choice(forms)()


def test_fuzz_urls_are_refused_before_any_request_and_never_echoed(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    key = tmp_path / "token"
    key.write_text(TOKEN)
    key.chmod(0o600)
    listener = ConnectionCounter()
    rng = random.Random(4242)
    try:
        for case in range(N_URL_CASES):
            url = bad_url(rng, listener.port)
            command = rng.choice(
                [
                    ["audit", "--project", "1"],
                    ["sync", "--project", "1"],
                    ["undo", "--project", "1"],
                    ["explain", "--project", "1", "--item", "1"],
                    ["compare", "--project", "1", "--seeds", "0"],
                ]
            )
            if rng.random() < 0.5:
                args = [*command, "--url", url, "--api-key-file", str(key)]
                monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
            else:
                args = [*command, "--api-key-file", str(key)]
                monkeypatch.setenv("LABEL_STUDIO_URL", url)
            code, out, err = run_cli(args, capsys)
            check_outcome(code, out, err, f"url case {case}: {url!r} ({command[0]})", (TOKEN, OTHER_TOKEN))
            assert code == 2, f"url case {case}: {url!r} was accepted"
    finally:
        listener.close()
    assert listener.connections == 0


# ------------------------------------------------------------------------------------------ Label Studio
def odd_image_reference(rng: random.Random) -> Any:
    """A task's image field that no one can read: a malformed URL, another scheme, a data: URI that is not
    an image, a path that is not there, or not a string at all."""
    forms = [
        lambda: f"http://127.0.0.1:{rng.choice(['99999', '65536', 'x1', '-5'])}/i.png",
        lambda: rng.choice(["http://[::1/i.png", "http://[::1]]/i.png", "https://[zz::1]/i.png"]),
        lambda: f"{''.join(rng.choice(string.ascii_lowercase) for _ in range(5))}://127.0.0.1/i.png",
        lambda: (
            "data:image/png;base64," + base64.b64encode(bytes(rng.randrange(256) for _ in range(60))).decode()
        ),
        lambda: "data:image/png;base64," + base64.b64encode(png((1, 2, 3))[: rng.randint(8, 50)]).decode(),
        lambda: "data:text/plain," + "not an image",
        lambda: "data:image/png;base64",
        lambda: f"/data/upload/0/missing-{rng.randint(0, 999)}.png?sig={OTHER_TOKEN}",
        lambda: "http://127.0.0.1:1/i.png",  # nothing listens on port 1
        lambda: "http://127.0.0.1:0/i.png",
        lambda: odd_value(rng),
    ]
    value = rng.choice(forms)()
    return "" if isinstance(value, str) and not value.strip() else jsonable(value)


def odd_tabular_row(rng: random.Random) -> Any:
    """A tabular task's row with at least one value that is not a finite number (or not a row at all)."""
    row: Any = {"a": rng.random(), "b": rng.random()}
    if rng.random() < 0.2:
        return jsonable(odd_value(rng)) if rng.random() < 0.5 else "not a row"
    value = odd_value(rng)
    while isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf"):
        value = odd_value(rng)
    row[rng.choice(["a", "b"])] = jsonable(value)
    return row


def import_each(server: Any, project_id: int, tasks: list[dict[str, Any]]) -> list[int | None]:
    """Import tasks one by one; None for one the server itself refuses (not relabel's input then)."""
    from tests.label_studio_seeding import import_tasks

    ids: list[int | None] = []
    for task in tasks:
        try:
            ids.append(import_tasks(server, project_id, [task])[0])
        except Exception:  # the seeding helper's error for a refused import (the server's own validation)
            ids.append(None)
    return ids


def ls_project(server: Any, kind: str, rng: random.Random) -> tuple[int, list[int], list[int]]:
    """A project of ``kind`` with 8 readable labeled tasks and 4 odd ones: (id, good ids, odd ids)."""
    from tests.label_studio_seeding import (
        choice_annotation,
        create_project,
        image_classification_config,
        tabular_classification_config,
        text_classification_config,
    )

    object_name, key = {"image": ("image", "image"), "text": ("text", "text"), "tabular": ("row", "row")}[
        kind
    ]
    config = {
        "image": image_classification_config,
        "text": text_classification_config,
        "tabular": tabular_classification_config,
    }[kind](["lo", "hi"])
    project_id = create_project(server, config, f"fuzz {kind}")

    def task(value: Any, label: str) -> dict[str, Any]:
        return {"data": {key: value}, "annotations": [choice_annotation(label, "label", object_name)]}

    good_values = {
        "image": lambda i: "data:image/png;base64," + base64.b64encode(png((20 * i,) * 3)).decode(),
        "text": lambda i: ("low quiet small " if i < 4 else "high loud big ") + str(i),
        "tabular": lambda i: {"a": float(i), "b": float(i % 2)},
    }[kind]
    odd = {
        "image": odd_image_reference,
        "text": lambda r: jsonable(odd_value(r)),
        "tabular": odd_tabular_row,
    }[kind]
    good = import_each(server, project_id, [task(good_values(i), "lo" if i < 4 else "hi") for i in range(8)])
    bad = import_each(server, project_id, [task(odd(rng), rng.choice(["lo", "hi"])) for _ in range(4)])
    return project_id, [i for i in good if i is not None], [i for i in bad if i is not None]


@pytest.mark.parametrize("seed", LS_SEEDS)
def test_fuzz_label_studio_task_data_through_audit(label_studio, tmp_path: Path, capsys, seed: int) -> None:
    key = tmp_path / "token"
    key.write_text(label_studio.legacy_token)
    key.chmod(0o600)
    rng = random.Random(seed)
    secrets = (label_studio.legacy_token, OTHER_TOKEN)
    for kind in ("image", "text", "tabular"):
        project_id, good, bad = ls_project(label_studio, kind, rng)
        assert len(good) == 8
        args = ["audit", "--url", label_studio.url, "--project", str(project_id), "--api-key-file", str(key)]
        args += ["--dry-run", "--json", "--top", "2", "--quiet", "--features", "tfidf"]
        code, out, err = run_cli(args, capsys)
        check_outcome(code, out, err, f"seed {seed} {kind} project, odd tasks {bad}", secrets)
        assert code == 0, err
        summary = json.loads(out)
        skipped = {entry["task_id"]: entry["reason"] for entry in summary["skipped_tasks"]}
        assert set(skipped) <= set(bad) and summary["n_labeled"] + len(skipped) == len(good) + len(bad)
        if kind in ("image", "tabular"):  # every odd image or row is unreadable: all of them skipped
            assert set(skipped) == set(bad), (kind, bad, skipped)
        for task_id, reason in skipped.items():
            assert reason.startswith(f"Task {task_id}: ") and "\n" not in reason
