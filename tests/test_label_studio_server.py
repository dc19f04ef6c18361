"""Tests of the local Label Studio launcher (reusing the session's one server; no second start)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import requests

from relabel.errors import ConnectorError
from scripts.local_label_studio import (
    DEFAULT_EXECUTABLE,
    LocalLabelStudio,
    ensure_label_studio_installed,
    find_free_port,
)


def test_reuse_adopts_the_running_server_and_refuses_a_second_one(label_studio: LocalLabelStudio) -> None:
    with LocalLabelStudio(label_studio.data_dir, reuse=True) as adopted:
        assert adopted.url == label_studio.url and not adopted.started_here
        assert adopted.legacy_token == label_studio.legacy_token
        assert adopted.personal_access_token() == label_studio.personal_access_token()
    # Leaving the block of an adopted server leaves it running.
    assert requests.get(label_studio.url + "/health", timeout=10).status_code == 200
    with pytest.raises(ConnectorError, match="already serves data dir"):
        LocalLabelStudio(label_studio.data_dir).start()
    other_port = find_free_port()
    with pytest.raises(ConnectorError, match=f"not {other_port}"):
        LocalLabelStudio(label_studio.data_dir, port=other_port, reuse=True).start()


def test_state_file_is_private(label_studio: LocalLabelStudio) -> None:
    assert stat.S_IMODE(label_studio.state_path.stat().st_mode) == 0o600


def test_a_server_that_dies_at_start_raises_with_the_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\necho 'fatal: database is locked' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = LocalLabelStudio(tmp_path / "data", executable=fake)
    with pytest.raises(ConnectorError, match=r"exited with code 3.*fatal: database is locked"):
        server.start(timeout=30)


def test_missing_executable_and_installed_venv(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="not installed"):
        LocalLabelStudio(tmp_path / "data", executable=tmp_path / "nope").start()
    # The repo's .ls-venv is already installed: nothing to do, the executable is returned.
    assert ensure_label_studio_installed(DEFAULT_EXECUTABLE.parent.parent) == DEFAULT_EXECUTABLE


def test_legacy_token_is_re_enabled_through_the_session_when_the_org_disabled_it(
    label_studio: LocalLabelStudio,
) -> None:
    def legacy_works() -> bool:
        response = requests.get(
            label_studio.url + "/api/current-user/whoami",
            headers={"Authorization": f"Token {label_studio.user_token}"},
            timeout=30,
        )
        return response.status_code == 200

    session = label_studio.login_session()
    try:
        answer = session.post(
            label_studio.url + "/api/jwt/settings", json={"legacy_api_tokens_enabled": False}, timeout=30
        )
        assert answer.status_code in (200, 201) and not legacy_works()  # what a fresh LS 1.23 org looks like
        fresh = LocalLabelStudio(label_studio.data_dir, reuse=True).start()
        assert fresh.legacy_token == label_studio.user_token
        assert legacy_works()
    finally:
        session.post(
            label_studio.url + "/api/jwt/settings", json={"legacy_api_tokens_enabled": True}, timeout=30
        )


def _session_processes(session_id: int) -> list[int]:
    """Every live process whose session id is ``session_id`` (the server was started in a new session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # after "pid (comm)": state, ppid, pgrp, session
            found.append(int(entry.name))
    return found


def test_the_server_command_line_holds_neither_the_password_nor_the_token(
    label_studio: LocalLabelStudio,
) -> None:
    assert label_studio.pid is not None
    processes = _session_processes(label_studio.pid)
    assert label_studio.pid in processes
    for pid in processes:
        try:
            command_line = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert label_studio.password not in command_line, pid
        assert label_studio.user_token not in command_line, pid
    # ... and they still reached the server through the environment: both log in.
    assert label_studio.login_session().get(label_studio.url + "/api/current-user/whoami", timeout=30).ok
    whoami = requests.get(
        label_studio.url + "/api/current-user/whoami",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        timeout=30,
    )
    assert whoami.status_code == 200


def _forged_jwt(claims: dict) -> str:
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQ"


@pytest.mark.parametrize(
    "token",
    [
        "0123456789abcdef0123456789abcdef01234567",  # a legacy token the server does not know
        _forged_jwt({"token_type": "refresh", "exp": 4102444800, "jti": "x" * 16}),  # a forged PAT
        _forged_jwt({"token_type": "refresh", "exp": 1000, "jti": "y" * 16}),  # an expired PAT
    ],
)
def test_a_token_the_server_rejects_is_one_line_that_shows_no_part_of_it(
    label_studio: LocalLabelStudio, token: str
) -> None:
    from connectors.label_studio import LabelStudioConnector

    with pytest.raises(ConnectorError) as caught:
        LabelStudioConnector(label_studio.url, token).pull(1)
    message = str(caught.value)
    assert "\n" not in message and "401" in message
    assert not any(token[start : start + 8] in message for start in range(len(token) - 7))
