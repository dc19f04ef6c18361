"""Run a local Label Studio server (for tests, the demo and benchmarks).

Label Studio 1.23 as it behaves in practice (found by experiment, see the notes in each method):

* ``label-studio start`` with ``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD`` and
  ``LABEL_STUDIO_USER_TOKEN`` in its environment creates that user on a fresh data dir (``server.py``'s
  ``_create_user`` reads them through ``get_env``, exactly as it reads ``--username``/``--password``/
  ``--user-token``); on a data dir that already holds the user they are ignored (the stored password/token
  stay). The secrets go through the environment, not the command line: ``/proc/<pid>/cmdline`` (``ps``) is
  readable by every user, ``/proc/<pid>/environ`` only by the server's own user.
* The organisation's *legacy* API tokens (``Authorization: Token T``) are refused with 401 ("legacy token
  authentication has been disabled for this organization") unless the organisation was created with
  ``--enable-legacy-api-token`` or an admin turns them on with ``POST /api/jwt/settings``
  ``{"legacy_api_tokens_enabled": true}`` from a logged-in browser session. We do both: pass the flag, and
  turn the setting on through a session if the token still does not work (e.g. an older data dir).
* A Personal Access Token is a JWT *refresh* token minted with ``POST /api/token/`` from a logged-in session.
  A user can hold only one: a second ``POST`` answers 409, so the minted token is kept in the data dir and
  handed out again. Requests use it by exchanging it at ``POST /api/token/refresh/`` for a 5-minute access
  token sent as ``Authorization: Bearer …`` (the SDK does this by itself).
* Start-up takes ≈40 s (migrations on SQLite). The PyPI version check, analytics and the Sentry error
  reporting that LS enables by default (a built-in DSN) are switched off, so the server never calls out.

Files in ``data_dir``: ``server.log`` (the server's stdout+stderr), ``relabel-server.json`` (pid, port, and
the credentials of this throw-away local admin, mode 0600) used by ``reuse=True`` to find a running server.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from relabel.errors import ConnectorError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXECUTABLE = REPO_ROOT / ".ls-venv" / "bin" / "label-studio"
STATE_FILE_NAME = "relabel-server.json"
LOG_FILE_NAME = "server.log"
DEFAULT_USERNAME = "admin@relabel.local"
HOST = "127.0.0.1"


def find_free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_label_studio_installed(venv_dir: Path, version_spec: str = "label-studio") -> Path:
    """Create ``venv_dir`` with ``python3 -m venv`` and ``pip install label-studio`` if it lacks the server.

    Label Studio pins its own Django/pydantic versions, so it lives in its own virtual environment rather
    than in the project's. Returns the path of the ``label-studio`` executable. Raises ConnectorError (with
    the tail of pip's output) if the installation fails.
    """
    venv_dir = Path(venv_dir)
    executable = venv_dir / "bin" / "label-studio"
    if executable.exists():
        return executable
    python = venv_dir / "bin" / "python"
    steps = []
    if not python.exists():
        steps.append(
            [sys.executable if Path(sys.executable).exists() else "python3", "-m", "venv", str(venv_dir)]
        )
    steps.append([str(python), "-m", "pip", "install", "--upgrade", "pip"])
    steps.append([str(python), "-m", "pip", "install", version_spec])
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise ConnectorError(f"Installing Label Studio failed ({' '.join(command)}): {tail}")
    if not executable.exists():
        raise ConnectorError(f"pip installed label-studio into {venv_dir} but {executable} is missing")
    return executable


def _port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalLabelStudio:
    """A Label Studio server on ``127.0.0.1`` whose data (SQLite DB, uploads, log) live in ``data_dir``.

    Usage::

        with LocalLabelStudio(tmp_path).start() as server:
            connector = LabelStudioConnector(server.url, server.legacy_token)

    ``reuse=True``: if ``data_dir`` holds the state file of a server that is still alive and answering, use it
    instead of starting another one (the demo runs against the same server across invocations); leaving the
    ``with`` block then does not stop it. Otherwise ``start()`` refuses to start a second server on a data dir
    that already has a live one (two servers on one SQLite file corrupt each other's view).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        executable: Path = DEFAULT_EXECUTABLE,
        reuse: bool = False,
        user_token: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.user_token = user_token or secrets.token_hex(20)
        self.executable = Path(executable)
        self.reuse = reuse
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.started_here = False
        self._personal_access_token: str | None = None
        self._legacy_enabled = False

    # ------------------------------------------------------------------ paths and state
    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr."""
        return self.data_dir / LOG_FILE_NAME

    @property
    def state_path(self) -> Path:
        """JSON file with pid, port and credentials of the server that owns ``data_dir``."""
        return self.data_dir / STATE_FILE_NAME

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123`` (no trailing slash)."""
        if self.port is None:
            raise ConnectorError("The local Label Studio server has not been started yet; call start() first")
        return f"http://{HOST}:{self.port}"

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self) -> None:
        self._write_state_dict(
            {
                "pid": self.pid,
                "port": self.port,
                "username": self.username,
                "password": self.password,
                "user_token": self.user_token,
                "personal_access_token": self._personal_access_token,
            }
        )

    def _write_state_dict(self, state: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(state, handle)

    def log_tail(self, n_chars: int = 3000) -> str:
        """The last ``n_chars`` characters of ``server.log`` (empty if there is none)."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def _healthy(self, port: int | None = None, timeout: float = 2.0) -> bool:
        port = self.port if port is None else port
        try:
            response = requests.get(f"http://{HOST}:{port}/health", timeout=timeout)
        except requests.RequestException:
            return False
        return response.status_code == 200

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> LocalLabelStudio:
        """Start the server (or adopt a live one when ``reuse``) and wait until ``/health`` answers 200.

        ``timeout`` is in seconds. Raises ConnectorError with the tail of ``server.log`` if the process exits
        or does not answer in time. Returns ``self``.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        if state and state.get("pid") and _process_alive(int(state["pid"])):
            live_port = int(state["port"])
            if self._healthy(live_port):
                if not self.reuse:
                    raise ConnectorError(
                        f"A Label Studio server (pid {state['pid']}, port {live_port}) already serves "
                        f"data dir {self.data_dir}; pass reuse=True to use it, or stop it first"
                    )
                if self.port is not None and self.port != live_port:
                    raise ConnectorError(
                        f"The Label Studio server for {self.data_dir} runs on port {live_port}, "
                        f"not {self.port}; stop it or ask for that port"
                    )
                self.port = live_port
                self.pid = int(state["pid"])
                self.username = state.get("username", self.username)
                self.password = state.get("password", self.password)
                self.user_token = state.get("user_token", self.user_token)
                self._personal_access_token = state.get("personal_access_token")
                self.started_here = False
                return self
        elif state:
            # A previous server on this data dir is gone; keep its credentials (they live in its database)
            # and, when free, its port (so URLs printed by an earlier run stay valid).
            if self.port is None and state.get("port") and _port_is_free(int(state["port"])):
                self.port = int(state["port"])
            self.username = state.get("username", self.username)
            self.password = state.get("password", self.password)
            self.user_token = state.get("user_token", self.user_token)
            self._personal_access_token = state.get("personal_access_token")

        if not self.executable.exists():
            raise ConnectorError(
                f"Label Studio is not installed at {self.executable}; run "
                "scripts.local_label_studio.ensure_label_studio_installed(<repo>/.ls-venv) first"
            )
        if self.port is None:
            self.port = find_free_port()
        command = [
            str(self.executable),
            "start",
            "--no-browser",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--enable-legacy-api-token",
        ]
        environment = dict(os.environ)
        environment.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
                # LS ships a default Sentry DSN: without these the server reports errors to sentry.io.
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                # The admin's credentials: through the environment, never on the command line (ps).
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.user_token,
            }
        )
        # The project's virtualenv must not leak into the server's interpreter.
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
            environment.pop(key, None)
        with open(self.log_path, "ab") as log_handle:
            self.process = subprocess.Popen(
                command,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=str(self.data_dir),
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.started_here = True
        self._write_state()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exit_code = self.process.poll()
            if exit_code is not None:
                raise ConnectorError(
                    f"Label Studio exited with code {exit_code} while starting on {self.url}; "
                    f"server log ({self.log_path}) ends with: {self.log_tail()}"
                )
            if self._healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise ConnectorError(
            f"Label Studio did not answer {self.url}/health within {timeout:.0f} s; "
            f"server log ({self.log_path}) ends with: {self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout`` seconds) and forget it."""
        pid = self.pid
        if pid is None:
            return
        if _process_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process is not None:
                    if self.process.poll() is not None:
                        break
                elif not _process_alive(pid):
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                if self.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=5)
        state = self._read_state()
        if state is not None and state.get("pid") == pid:
            state["pid"] = None
            self.pid = None
            self._write_state_dict(state)
        self.pid = None
        self.process = None

    def __enter__(self) -> LocalLabelStudio:
        if self.pid is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.started_here:
            self.stop()

    # ------------------------------------------------------------------ credentials
    def login_session(self) -> requests.Session:
        """A requests.Session logged in as the admin through the web login form (cookie auth).

        Unsafe methods need the CSRF header; the session carries ``X-CSRFToken`` and a same-origin
        ``Referer``.
        """
        session = requests.Session()
        login_url = f"{self.url}/user/login/"
        try:
            session.get(login_url, timeout=30)
            csrf = session.cookies.get("csrftoken", "")
            response = session.post(
                login_url,
                data={"csrfmiddlewaretoken": csrf, "email": self.username, "password": self.password},
                headers={"Referer": login_url},
                allow_redirects=False,
                timeout=30,
            )
        except requests.RequestException as error:
            raise ConnectorError(f"Could not reach Label Studio at {self.url} to log in: {error}") from error
        if response.status_code != 302 or "/user/login" in response.headers.get("Location", ""):
            raise ConnectorError(
                f"Logging in to Label Studio at {self.url} as {self.username} failed "
                f"(HTTP {response.status_code})"
            )
        session.headers.update(
            {"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": f"{self.url}/"}
        )
        return session

    def _legacy_token_works(self) -> bool:
        response = requests.get(
            f"{self.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {self.user_token}"},
            timeout=30,
        )
        return response.status_code == 200

    @property
    def legacy_token(self) -> str:
        """The admin's legacy API token (``Authorization: Token …``), legacy tokens enabled for the org."""
        if not self._legacy_enabled:
            if not self._legacy_token_works():
                session = self.login_session()
                response = session.post(
                    f"{self.url}/api/jwt/settings",
                    json={"legacy_api_tokens_enabled": True, "api_tokens_enabled": True},
                    timeout=30,
                )
                if response.status_code not in (200, 201) or not self._legacy_token_works():
                    raise ConnectorError(
                        f"Could not enable legacy API tokens on {self.url} (POST /api/jwt/settings answered "
                        f"{response.status_code})"
                    )
            self._legacy_enabled = True
        return self.user_token

    def personal_access_token(self) -> str:
        """A Personal Access Token (JWT refresh token) for the admin, minted once and kept in the state file.

        LS allows one live PAT per user (a second ``POST /api/token/`` answers 409), so the first one minted
        for this data dir is stored and returned on every later call, across restarts and ``reuse``.
        """
        if self._personal_access_token:
            return self._personal_access_token
        stored = (self._read_state() or {}).get("personal_access_token")
        if stored:  # minted meanwhile by another handle on this data dir (e.g. one that adopted the server)
            self._personal_access_token = str(stored)
            return self._personal_access_token
        session = self.login_session()
        response = session.post(f"{self.url}/api/token/", timeout=30)
        if response.status_code == 409:
            raise ConnectorError(
                f"The admin of {self.url} already holds a Personal Access Token that was not recorded in "
                f"{self.state_path}; revoke it in the UI (Account & Settings) and retry"
            )
        if response.status_code not in (200, 201):
            raise ConnectorError(
                f"Minting a Personal Access Token on {self.url} failed (HTTP {response.status_code})"
            )
        self._personal_access_token = str(response.json()["token"])
        state = self._read_state() or {}
        state["personal_access_token"] = self._personal_access_token
        self._write_state_dict(state)
        return self._personal_access_token

    def __repr__(self) -> str:
        port = self.port if self.port is not None else "?"
        return f"LocalLabelStudio(data_dir={str(self.data_dir)!r}, port={port}, pid={self.pid})"
