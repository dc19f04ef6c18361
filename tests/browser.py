"""A small headless-Chromium driver for tests, over the DevTools protocol (CDP), with no browser-driver
download: Debian's ``chromium`` and ``websocket-client``.

Usage::

    with Browser() as browser:
        browser.login(f"{server.url}/user/login/", server.username, server.password)
        browser.goto(f"{server.url}/projects/")
        browser.wait_for("document.body.innerText.includes('my project')", timeout=60)
        titles = browser.evaluate("[...document.querySelectorAll('a')].map(a => a.textContent)")
        browser.screenshot(tmp_path / "projects.png")
        assert not browser.errors, browser.errors

How it works: ``chromium --headless=new --remote-debugging-port=0 --user-data-dir=TMP`` picks a free port
and writes it (and the browser's websocket path) to ``TMP/DevToolsActivePort``; we connect to the browser
websocket, open one page target (``Target.createTarget``) and attach to it with a flat session, so every
command and event travels over that one socket. Commands are answered by id; every other message is an
event, and the ones that mean "something went wrong in the page" are kept in :attr:`Browser.errors`:

* ``Runtime.exceptionThrown`` (uncaught exceptions, unhandled promise rejections),
* ``Runtime.consoleAPICalled`` with type ``error`` or ``assert`` (``console.error(...)``),
* ``Log.entryAdded`` with level ``error`` (network failures, CSP and other browser-side errors).

Nothing here skips: if chromium is missing or does not start, :class:`BrowserError` says why (with the tail
of its stderr). Waiting is polling a JavaScript expression (``wait_for``), which survives navigations and
single-page apps that render late (Label Studio's React pages).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
START_TIMEOUT_SECONDS = 60.0
COMMAND_TIMEOUT_SECONDS = 60.0


class BrowserError(RuntimeError):
    """Chromium could not start, a DevTools command failed, or a page script threw."""


@dataclass(frozen=True)
class PageError:
    """One error seen in the page: ``kind`` (exception / console / log), its text, and where."""

    kind: str
    text: str
    url: str = ""

    def __str__(self) -> str:
        return f"[{self.kind}] {self.text}" + (f" ({self.url})" if self.url else "")


def find_chromium() -> str:
    """The chromium executable (``$RELABEL_CHROMIUM`` first); BrowserError when there is none."""
    override = os.environ.get("RELABEL_CHROMIUM")
    for candidate in ((override,) if override else ()) + CHROMIUM_CANDIDATES:
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            return path
    raise BrowserError(
        "chromium is not installed (apt-get install -y chromium, or set RELABEL_CHROMIUM); the browser "
        "tests need it and do not skip"
    )


class Browser:
    """One headless Chromium with one page, driven over CDP. Use as a context manager (or call close()).

    ``width``/``height``: the window (viewport) size; ``timeout``: default seconds for page loads and waits.
    """

    def __init__(
        self,
        *,
        width: int = 1400,
        height: int = 1000,
        timeout: float = 30.0,
        executable: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.timeout = timeout
        self.errors: list[PageError] = []
        self.events: list[dict[str, Any]] = []  # every event seen, for debugging (bounded)
        self._ids = itertools.count(1)
        self._profile = Path(tempfile.mkdtemp(prefix="relabel-chromium-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: websocket.WebSocket | None = None
        self._session: str | None = None
        self._stderr_path = self._profile / "chromium-stderr.log"
        command = [
            executable or find_chromium(),
            "--headless=new",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={self._profile / 'profile'}",
            f"--window-size={width},{height}",
            "--no-sandbox",  # root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            *extra_args,
            "about:blank",
        ]
        try:
            with open(self._stderr_path, "wb") as stderr:
                self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            self._connect(width, height)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ start and stop
    def _stderr_tail(self, n_chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self._stderr_path.read_text(errors="replace")[-n_chars:]
        return ""

    def _connect(self, width: int, height: int) -> None:
        port_file = self._profile / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        lines: list[str] = []
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrowserError(
                    f"chromium exited at start-up (exit {self._process.returncode}): {self._stderr_tail()}"
                )
            with contextlib.suppress(OSError):
                lines = port_file.read_text().split()
            if len(lines) >= 2:
                break
            time.sleep(0.1)
        else:
            raise BrowserError(
                f"chromium wrote no DevToolsActivePort within {START_TIMEOUT_SECONDS:.0f} s: "
                + self._stderr_tail()
            )
        port, path = int(lines[0]), lines[1]
        self._socket = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}", timeout=COMMAND_TIMEOUT_SECONDS, suppress_origin=True
        )
        target = self._send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self._send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self._send(f"{domain}.enable")
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def close(self) -> None:
        """Close the browser (Browser.close, then terminate/kill if it lingers) and delete its profile."""
        if self._socket is not None:
            with contextlib.suppress(Exception):
                self._send("Browser.close", session=False, timeout=5)
            with contextlib.suppress(Exception):
                self._socket.close()
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=5)
            self._process = None
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol
    def _send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = True,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """Send one CDP command (to the page session unless ``session=False``) and return its result;
        events that arrive meanwhile are recorded. BrowserError on a protocol error or a timeout."""
        if self._socket is None:
            raise BrowserError("the browser is closed")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"DevTools command {method} got no answer within {timeout:.0f} s")
            self._socket.settimeout(remaining)
            try:
                reply = json.loads(self._socket.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._record(reply)

    def _record(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if len(self.events) < 5000:
            self.events.append(event)
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            text = exception.get("description") or details.get("text", "exception")
            self.errors.append(PageError("exception", str(text), details.get("url", "")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            frames = params.get("stackTrace", {}).get("callFrames", [])
            self.errors.append(PageError("console", text, frames[0].get("url", "") if frames else ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(PageError("log", str(entry.get("text", "")), str(entry.get("url", ""))))

    def drain(self, seconds: float = 0.2) -> None:
        """Read the events that arrive during ``seconds`` (errors logged after the last command)."""
        deadline = time.monotonic() + seconds
        while self._socket is not None and (remaining := deadline - time.monotonic()) > 0:
            self._socket.settimeout(remaining)
            try:
                message = json.loads(self._socket.recv())
            except websocket.WebSocketTimeoutException:
                return
            if "method" in message:
                self._record(message)

    # ------------------------------------------------------------------ pages
    def goto(self, url: str, *, timeout: float | None = None) -> None:
        """Navigate and wait until the document has loaded (``readyState == "complete"``)."""
        result = self._send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout=timeout, what=f"{url} to load")

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The JSON value of a JavaScript expression in the page; BrowserError if it throws."""
        result = self._send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression[:120]!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(
        self, condition: str, *, timeout: float | None = None, interval: float = 0.2, what: str = ""
    ) -> Any:
        """Poll the JavaScript expression ``condition`` until it is truthy; returns its value.

        Errors thrown by the expression while the page is (re)loading count as "not yet". On timeout:
        BrowserError with the last value or error, the page URL and the page errors seen so far.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.evaluate(condition)
                if last:
                    return last
            except BrowserError as error:
                last = error
            if time.monotonic() >= deadline:
                where = "?"
                with contextlib.suppress(BrowserError):
                    where = self.url
                raise BrowserError(
                    f"timed out after {timeout:.0f} s waiting for {what or condition!r} on {where}; "
                    f"last value: {last!r}; page errors: {[str(e) for e in self.errors][:5]}"
                )
            self.drain(interval)

    def wait_for_selector(
        self, selector: str, *, visible: bool = False, timeout: float | None = None
    ) -> None:
        """Wait until ``document.querySelector(selector)`` finds an element (with ``visible``: one that is
        rendered with a non-empty box)."""
        check = (
            "(e => !!e && e.getClientRects().length > 0)" if visible else "(e => !!e)"
        ) + f"(document.querySelector({json.dumps(selector)}))"
        self.wait_for(check, timeout=timeout, what=f"selector {selector}")

    def wait_for_text(self, text: str, *, selector: str = "body", timeout: float | None = None) -> None:
        """Wait until the rendered text (``innerText``) of ``selector`` contains ``text``."""
        self.wait_for(
            f"(e => !!e && e.innerText.includes({json.dumps(text)}))"
            f"(document.querySelector({json.dumps(selector)}))",
            timeout=timeout,
            what=f"the text {text!r} in {selector}",
        )

    def count(self, selector: str, *, visible: bool = False) -> int:
        """How many elements match ``selector`` (with ``visible``: only the rendered ones)."""
        nodes = f"[...document.querySelectorAll({json.dumps(selector)})]"
        if visible:
            nodes += ".filter(e => e.getClientRects().length > 0)"
        return int(self.evaluate(f"{nodes}.length"))

    def text(self, selector: str = "body") -> str:
        """The rendered text (``innerText``) of the first element matching ``selector``."""
        return str(self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    def click(self, selector: str) -> None:
        """Click the first element matching ``selector`` (BrowserError if none)."""
        found = self.evaluate(
            f"(e => {{ if (!e) return false; e.click(); return true; }})"
            f"(document.querySelector({json.dumps(selector)}))"
        )
        if not found:
            raise BrowserError(f"nothing to click: no element matches {selector!r}")

    def fill(self, selector: str, value: str) -> None:
        """Type ``value`` into an input the way a user would as far as page scripts can tell (the native
        value setter, then ``input`` and ``change`` events, so React-controlled inputs see it too)."""
        found = self.evaluate(
            "(e => { if (!e) return false; e.focus();"
            " const proto = e instanceof HTMLTextAreaElement ? HTMLTextAreaElement : HTMLInputElement;"
            " Object.getOwnPropertyDescriptor(proto.prototype, 'value').set.call(e, "
            + json.dumps(value)
            + "); e.dispatchEvent(new Event('input', {bubbles: true}));"
            " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })"
            f"(document.querySelector({json.dumps(selector)}))"
        )
        if not found:
            raise BrowserError(f"no input matches {selector!r}")

    def select(self, selector: str, value: str) -> None:
        """Choose ``value`` in a ``<select>`` and fire its ``change`` event."""
        found = self.evaluate(
            "(e => { if (!e) return false; e.value = "
            + json.dumps(value)
            + "; e.dispatchEvent(new Event('change', {bubbles: true})); return e.value === "
            + json.dumps(value)
            + "; })"
            f"(document.querySelector({json.dumps(selector)}))"
        )
        if not found:
            raise BrowserError(f"no <select> {selector!r} with an option {value!r}")

    def set_cookie(self, name: str, value: str, url: str, **options: Any) -> None:
        """Set a cookie for ``url`` (e.g. a session id); ``options``: path, httpOnly, secure, sameSite…"""
        result = self._send("Network.setCookie", {"name": name, "value": value, "url": url, **options})
        if result.get("success") is False:
            raise BrowserError(f"Chromium refused the cookie {name!r} for {url}")

    def cookies(self) -> list[dict[str, Any]]:
        """The cookies the page's current URL would send."""
        return list(self._send("Network.getCookies").get("cookies", []))

    def login(
        self,
        login_url: str,
        username: str,
        password: str,
        *,
        username_selector: str = "input[name=email], input[name=username], input[type=email]",
        password_selector: str = "input[type=password]",
        submit_selector: str | None = None,
        success: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Log in through the page's form: open ``login_url``, fill the username and password fields, submit
        (click ``submit_selector``, else submit the password field's form as its submit button would), and
        wait until ``success`` holds (default: the page has left ``login_url``'s path and finished loading).

        Defaults fit Label Studio's ``/user/login/`` (fields ``email`` and ``password``). BrowserError when
        the form is missing or the login does not succeed (the page's visible error text is included).
        """
        self.goto(login_url, timeout=timeout)
        self.wait_for_selector(password_selector, timeout=timeout)
        self.fill(username_selector, username)
        self.fill(password_selector, password)
        if submit_selector:
            self.click(submit_selector)
        else:
            submitted = self.evaluate(
                f"(p => {{ const f = p && p.form; if (!f) return false; f.requestSubmit(); return true; }})"
                f"(document.querySelector({json.dumps(password_selector)}))"
            )
            if not submitted:
                raise BrowserError(f"the password field on {login_url} is not inside a form")
        path = json.dumps(_path_of(login_url))
        condition = success or (
            f"!location.pathname.startsWith({path}) && document.readyState === 'complete'"
        )
        try:
            self.wait_for(condition, timeout=timeout, what="the login to succeed")
        except BrowserError as error:
            page_text = ""
            with contextlib.suppress(BrowserError):
                page_text = self.text()[:300]
            raise BrowserError(
                f"logging in as {username} failed ({error}); the page says {page_text!r}"
            ) from error

    def screenshot(self, path: str | Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (``full_page``: the whole document, not just the viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self._send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": max(1, int(size["width"])),
                "height": max(1, min(int(size["height"]), 16000)),
                "scale": 1,
            }
        data = self._send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors_except(self, *fragments: str) -> list[PageError]:
        """The page errors whose text or URL contains none of ``fragments`` (known, harmless noise)."""
        return [e for e in self.errors if not any(f in e.text or f in e.url for f in fragments)]


def _path_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path or "/"


@contextlib.contextmanager
def browser(**options: Any) -> Iterator[Browser]:
    """``with browser() as b:`` — a :class:`Browser` closed at the end."""
    instance = Browser(**options)
    try:
        yield instance
    finally:
        instance.close()
