"""What relabel writes: private files (0600) and folders (0700), spreadsheet-safe CSV, output paths checked
before any work, safe nightly names and report folders (no server: files, the in-memory Label Studio)."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors.label_studio import LabelStudioConnector
from relabel.cli import main
from relabel.errors import InputError
from relabel.nightly import EXIT_BAD_CONFIG, EXIT_OK, NightlyConfig, ProjectConfig, run_nightly
from relabel.output import check_writable_folder, spreadsheet_safe, write_csv
from tests.test_pipeline_unit import seeded


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def labeled_csv(path: Path, n: int = 120, labels: tuple[str, str] = ("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=n) > 0, labels[1], labels[0])
    pd.DataFrame({"id": range(n), "f1": X[:, 0], "f2": X[:, 1], "f3": X[:, 2], "label": y}).to_csv(
        path, index=False
    )
    return path


# ------------------------------------------------------------------------------------- spreadsheet safety
def test_text_cells_that_would_start_a_formula_get_a_quote_and_numbers_stay_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "=HYPERLINK(1)": [1, 2, 3, 4, 5, 6, 7],
            "text": ["=cmd|' /C calc'!A0", "+SUM(A1)", "-2+3+cmd", "@SUM(1)", "\tx", "\rx", "plain"],
            "number_text": ["-1", "+2.5", "3", "-1e5", "=1", "a-b", ""],
            "score": [-1.5, 2.0, -3.0, 0.0, 1.0, -0.5, 4.0],
        }
    )
    path = write_csv(frame, tmp_path / "out.csv")
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode(), newline="")))
    assert rows[0][0] == "'=HYPERLINK(1)"
    assert [row[1] for row in rows[1:]] == [
        "'=cmd|' /C calc'!A0", "'+SUM(A1)", "'-2+3+cmd", "'@SUM(1)", "'\tx", "'\rx", "plain"
    ]  # fmt: skip
    assert [row[2] for row in rows[1:]] == ["-1", "+2.5", "3", "-1e5", "'=1", "a-b", ""]
    assert pd.read_csv(path)["score"].tolist() == frame["score"].tolist()
    assert spreadsheet_safe(frame)["score"].dtype == np.float64
    assert mode(path) == 0o600


def test_rank_out_csv_is_spreadsheet_safe_and_private(tmp_path: Path) -> None:
    data = labeled_csv(tmp_path / "data.csv", labels=("=cmd|' /C calc'!A0", "@evil"))
    out = tmp_path / "new" / "deeper" / "ranking.csv"
    assert main(["rank", str(data), "--id-column", "id", "--out", str(out), "--quiet"]) == 0
    labels = set(pd.read_csv(out)["label"])
    assert labels == {"'=cmd|' /C calc'!A0", "'@evil"}
    assert mode(out) == 0o600 and mode(out.parent) == 0o700 and mode(out.parent.parent) == 0o700


# ------------------------------------------------------------------------------------- output paths
def test_rank_refuses_an_out_folder_that_cannot_be_created_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = labeled_csv(tmp_path / "data.csv")
    (tmp_path / "afile").write_text("")
    code = main(["rank", str(data), "--out", str(tmp_path / "afile" / "sub" / "r.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "afile is a file" in err
    assert main(["rank", str(data), "--out", str(tmp_path), "--quiet"]) == 2  # a folder, not a file name


@pytest.mark.parametrize("top", ["-5", "0"])
def test_rank_refuses_top_below_one(tmp_path: Path, top: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = labeled_csv(tmp_path / "data.csv")
    out = tmp_path / "r.csv"
    assert main(["rank", str(data), "--top", top, "--out", str(out), "--quiet"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err and not out.exists()


def test_compare_refuses_an_out_folder_that_cannot_be_created_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    code = main(["compare", "--dataset", "iris", "--seeds", "0", "--out", str(tmp_path / "afile" / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "afile is a file" in err


def test_compare_writes_private_files(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    code = main(["compare", "--dataset", "iris", "--seeds", "0", "--out", str(out), "--quiet"])
    assert code == 0 and mode(out) == 0o700
    assert {mode(path) for path in out.iterdir()} == {0o600}
    assert not list(out.glob(".*.tmp"))


def test_check_writable_folder_creates_nothing(tmp_path: Path) -> None:
    check_writable_folder(tmp_path / "a" / "b", "--out")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------- nightly
def nightly_config(tmp_path: Path, url: str, project_id: int, name: str = "unit", extra: str = "") -> Path:
    config = tmp_path / "audit.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nlog_file = "{tmp_path / "logs" / "nightly.log"}"\n'
        f'[defaults]\nurl = "{url}"\ntop = 5\nreport_dir = "{tmp_path / "reports"}/{{name}}"\n{extra}'
        f'[[projects]]\nname = "{name}"\nproject = {project_id}\n'
    )
    return config


def test_nightly_state_log_lock_and_report_are_private(tmp_path: Path) -> None:
    client, project_id, _, _ = seeded()
    connector = LabelStudioConnector(client=client)
    stream = io.StringIO()
    config = nightly_config(tmp_path, client.url, project_id)
    assert run_nightly(config, stream=stream, connector_factory=lambda _: connector) == EXIT_OK, (
        stream.getvalue()
    )
    state, logs, report = tmp_path / "state", tmp_path / "logs", tmp_path / "reports" / "unit"
    for folder in (state, logs, report, tmp_path / "reports"):
        assert mode(folder) == 0o700, folder
    files = [*state.iterdir(), *logs.iterdir(), *report.iterdir()]
    assert {path.name for path in files} >= {"unit.state.json", "nightly.lock", "nightly.log", "ranking.csv"}
    assert {mode(path) for path in files} == {0o600}


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "-x", ""])
def test_nightly_refuses_names_that_could_leave_the_folders(tmp_path: Path, name: str) -> None:
    stream = io.StringIO()
    assert run_nightly(nightly_config(tmp_path, "http://x", 1, name=name), stream=stream) == EXIT_BAD_CONFIG
    assert "name" in stream.getvalue() and stream.getvalue().count("\n") == 1
    with pytest.raises(InputError, match="may hold only"):
        ProjectConfig(name=name, url="http://x", project=1, report_dir="reports/{name}")


@pytest.mark.parametrize(
    ("report_dir", "problem"),
    [("reports/../../etc/{name}", "'..'"), ("reports/{name}/{date}", "only {name} and {project}"),
     ("reports/{name.__class__}", "only {name} and {project}")],
)  # fmt: skip
def test_nightly_report_dir_cannot_escape_or_hold_other_placeholders(report_dir: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        NightlyConfig.from_dict(
            {
                "state_dir": "s",
                "projects": [{"name": "p", "url": "http://x", "project": 1, "report_dir": report_dir}],
            }
        )
    project = ProjectConfig(name="p.v2", url="http://x", project=7, report_dir="reports/{name}-{project}")
    assert project.report_path() == Path("reports/p.v2-7")


# ------------------------------------------------------------------------------------- audit --report
def audit_with_fake(monkeypatch: pytest.MonkeyPatch) -> tuple[object, int]:
    import relabel.commands.audit as audit_command

    client, project_id, _, _ = seeded()
    monkeypatch.setattr(audit_command, "connector_from_args", lambda _: LabelStudioConnector(client=client))
    return client, project_id


def relabel_predictions(client: object, project_id: int) -> list[dict]:
    predictions = client.list_predictions(project_id)  # type: ignore[attr-defined]
    return [p for p in predictions if p["model_version"].startswith("relabel-")]


def test_audit_report_failure_after_the_push_still_prints_the_summary_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import relabel.report

    client, project_id = audit_with_fake(monkeypatch)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(relabel.report, "write_audit_report", full_disk)
    report = str(tmp_path / "r")
    code = main(
        [
            "audit",
            "--project",
            str(project_id),
            "--top",
            "5",
            "--queue",
            "view",
            "--report",
            report,
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "flagged the top 5 items" in captured.out and "open: " in captured.out
    assert captured.err.count("\n") == 1 and "warning: the report was not written" in captured.err
    assert "No space left on device" in captured.err and "Traceback" not in captured.err
    assert len(relabel_predictions(client, project_id)) == 5  # the push happened and is reported


def test_audit_report_folder_that_cannot_be_created_is_refused_before_the_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, project_id = audit_with_fake(monkeypatch)
    exports_before = client.calls.get("export_tasks", 0)  # type: ignore[attr-defined]
    (tmp_path / "afile").write_text("")
    code = main(["audit", "--project", str(project_id), "--report", str(tmp_path / "afile" / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--report" in err
    assert relabel_predictions(client, project_id) == []
    assert client.calls.get("export_tasks", 0) == exports_before  # type: ignore[attr-defined]


def test_audit_writes_the_report_itself_and_names_it_in_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, project_id = audit_with_fake(monkeypatch)
    report = tmp_path / "report"
    assert (
        main(["audit", "--project", str(project_id), "--top", "3", "--report", str(report), "--quiet"]) == 0
    )
    assert f"report written to {report / 'report.html'}" in capsys.readouterr().out
    assert {path.name for path in report.iterdir()} == {
        "report.html",
        "ranking.csv",
        "ranking.parquet",
        "explain.parquet",
        "audit.json",
    }


@pytest.mark.parametrize("where", ["state_dir", "log_file"])
def test_nightly_state_dir_or_log_that_cannot_be_created_is_one_line_exit_2(
    tmp_path: Path, where: str
) -> None:
    client, project_id, _, _ = seeded()
    connector = LabelStudioConnector(client=client)
    (tmp_path / "afile").write_text("")
    config = nightly_config(tmp_path, client.url, project_id)
    text = config.read_text()
    if where == "state_dir":
        text = text.replace(
            f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{tmp_path / "afile" / "s"}"'
        )
    else:
        text = text.replace(str(tmp_path / "logs" / "nightly.log"), str(tmp_path / "afile" / "n.log"))
    config.write_text(text)
    stream, calls_before = io.StringIO(), dict(client.calls)
    assert run_nightly(config, stream=stream, connector_factory=lambda _: connector) == EXIT_BAD_CONFIG
    assert stream.getvalue().count("\n") == 1 and stream.getvalue().startswith("relabel-nightly: error: ")
    assert "afile" in stream.getvalue() and client.calls == calls_before  # nothing pulled or pushed
