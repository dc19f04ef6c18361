"""Secrets never leak: the token is checked when it enters (file, argument, environment), every message that
could hold it goes through one redaction function, and credentials in URLs are refused (no server needed:
everything here fails before a request is sent)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from connectors.label_studio.client import (
    API_KEY_ENV,
    LabelStudioClient,
    read_api_key,
    redact,
    validate_api_key,
)
from relabel.cli import main
from relabel.errors import ConnectorError
from relabel.nightly import _redact as nightly_redact

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlc2lnbmF0dXJl"


def shows_part_of(text: str, secret: str, width: int = 6) -> bool:
    """True when ``text`` holds any ``width``-character piece of ``secret``."""
    return any(secret[start : start + width] in text for start in range(len(secret) - width + 1))


def key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------------------------- the token as read
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (TOKEN[:16].encode() + b"\n" + TOKEN[16:].encode() + b"\n", "more than one line"),
        (TOKEN[:16].encode() + b"\r\n" + TOKEN[16:].encode(), "more than one line"),
        (TOKEN[:20].encode() + "é".encode() + TOKEN[20:].encode(), "not printable ASCII"),
        (TOKEN[:20].encode() + b"\x00" + TOKEN[20:].encode(), "not printable ASCII"),
        (b"Token " + TOKEN.encode(), "holds a space"),
        (b"  \n\xef\xbb\xbf \n", "is empty"),
    ],
)
def test_a_malformed_token_file_is_refused_in_one_line_that_shows_no_part_of_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = key_file(tmp_path, content)
    with pytest.raises(ConnectorError, match=problem) as caught:
        read_api_key(path)
    message = str(caught.value)
    assert "\n" not in message and not shows_part_of(message, TOKEN)


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + TOKEN.encode() + b"\n",  # one byte-order mark (Windows editors)
        b"\xef\xbb\xbf\xef\xbb\xbf" + TOKEN.encode() + b"\r\n",  # two of them (saved twice)
        b"\n  " + TOKEN.encode() + b"  \n\n",
    ],
)
def test_byte_order_marks_and_surrounding_whitespace_are_dropped(tmp_path: Path, content: bytes) -> None:
    assert read_api_key(key_file(tmp_path, content)) == TOKEN


def test_the_environment_variable_is_validated_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "\ufeff" + TOKEN + "\n")
    assert read_api_key() == TOKEN
    monkeypatch.setenv(API_KEY_ENV, TOKEN[:16] + "\n" + TOKEN[16:])
    with pytest.raises(ConnectorError, match=rf"\${API_KEY_ENV} holds more than one line") as caught:
        read_api_key()
    assert not shows_part_of(str(caught.value), TOKEN)


def test_the_client_validates_a_token_passed_as_argument_or_environment_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = TOKEN[:16] + "\n" + TOKEN[16:]
    with pytest.raises(ConnectorError, match="the api_key argument holds more than one line") as caught:
        LabelStudioClient("http://127.0.0.1:9", bad)
    assert not shows_part_of(str(caught.value), TOKEN)
    monkeypatch.setenv(API_KEY_ENV, "\ufeff\ufeff" + TOKEN[:10] + "é" + TOKEN[10:])
    with pytest.raises(ConnectorError, match="not printable ASCII") as caught:
        LabelStudioClient("http://127.0.0.1:9")
    assert not shows_part_of(str(caught.value), TOKEN)


def test_a_token_file_other_users_can_read_gets_a_one_line_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert read_api_key(key_file(tmp_path, TOKEN.encode(), 0o600)) == TOKEN
    assert capsys.readouterr().err == ""
    path = key_file(tmp_path, TOKEN.encode(), 0o644)
    assert read_api_key(path) == TOKEN  # a warning, not an error
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "warning" in warning and "chmod 600" in warning
    assert not shows_part_of(warning, TOKEN)
    assert read_api_key(path) == TOKEN and capsys.readouterr().err == ""  # once per process


# ------------------------------------------------------------------------------------- one redaction
def test_redact_hides_the_token_in_every_form_and_jwts_and_url_credentials() -> None:
    access = jwt({"token_type": "access", "exp": 1})
    forms = [
        TOKEN,
        repr("x" + TOKEN + "\n")[1:-1],
        urllib.parse.quote("Token " + TOKEN, safe=""),
        json.dumps({"Authorization": f"Token {TOKEN}"}),
        f"b'Token {TOKEN[:16]}\\n{TOKEN[16:]}'",  # httpx's "Invalid header value" text of a two-line token
    ]
    text = " | ".join(forms) + f" | Bearer {access} | http://user:s3cretpass@host:8080/api | {access}"
    secrets = [TOKEN, TOKEN[:16] + "\n" + TOKEN[16:]]
    cleaned = redact(text, secrets)
    assert not shows_part_of(cleaned, TOKEN, width=12)
    assert "s3cretpass" not in cleaned and access not in cleaned and access.split(".")[1] not in cleaned
    assert "http://***@host:8080/api" in cleaned


def test_the_nightly_log_uses_the_same_redaction_and_stays_one_line() -> None:
    pat = jwt({"token_type": "refresh"})
    line = nightly_redact(
        f"ValueError: Invalid header value b'Token {TOKEN[:16]}\\n{TOKEN[16:]}' for {pat}\nat http://u:pw123456@h/",
        [TOKEN[:16] + "\n" + TOKEN[16:]],
    )
    assert "\n" not in line and not shows_part_of(line, TOKEN, width=12)
    assert pat not in line and "pw123456" not in line


def test_validate_api_key_accepts_a_personal_access_token() -> None:
    pat = jwt({"token_type": "refresh"})
    assert validate_api_key(f" {pat}\n", "test") == pat


# ------------------------------------------------------------------------------------- the CLI
def test_cli_refuses_a_two_line_token_file_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = key_file(tmp_path, TOKEN[:16].encode() + b"\n" + TOKEN[16:].encode())
    code = main(["audit", "--url", "http://127.0.0.1:9", "--project", "1", "--api-key-file", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1
    assert not shows_part_of(captured.err + captured.out, TOKEN)


def test_cli_refuses_credentials_in_the_url_without_printing_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = key_file(tmp_path, TOKEN.encode())
    url = "http://user:s3cretpass@127.0.0.1:9"
    code = main(["audit", "--url", url, "--project", "1", "--api-key-file", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and "s3cretpass" not in captured.err + captured.out
    assert "user name or password" in captured.err and "http://***@127.0.0.1:9" in captured.err
