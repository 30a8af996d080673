"""The report and index pages in headless Chromium: no console error, every image decoded,
the verdict cells right.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so the test needs only the standard library and the
Debian ``chromium`` package (``.ci/run`` installs it). Only ``file://`` URLs are loaded and every
background network feature of the browser is switched off. Skips when no Chromium is installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bms.report import build_index, build_report

pytest.importorskip("matplotlib", reason="reports need the optional matplotlib extra")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
)
TIMEOUT_S = 60.0


def find_browser() -> str | None:
    """``$BMS_CHROMIUM`` or the first Chromium on PATH."""
    explicit = os.environ.get("BMS_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in BROWSERS:
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None
        )
        if path:
            return path
    return None


class PipeBrowser:
    """Minimal DevTools-protocol client over Chromium's debugging pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, user_data_dir: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: the pipe ends become fd 3 and 4
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer (events meanwhile go to ``events``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        """The first event named ``method`` (already received or still to come)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("no answer from Chromium over the debugging pipe")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"Chromium closed the debugging pipe: {err[-500:]}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def close(self) -> None:
        """Ask the browser to quit, then make sure this process (ours) is gone."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()


PAGE_STATE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                                                 alt: i.alt})),
  verdicts: Array.from(document.querySelectorAll('td.v')).map(td => [
      td.textContent, td.parentElement.children[1].textContent.trim()]),
  external: Array.from(document.querySelectorAll('[src],[href]'))
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => /^[a-z]+:\\/\\//i.test(u))
})"""


def open_page(browser: PipeBrowser, path: Path) -> tuple[dict, list[str]]:
    """Load ``path`` in a new tab; returns the page state and every console/log error."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable", session=session)
    browser.events.clear()
    browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    browser.wait_event("Page.loadEventFired")
    state = browser.send(
        "Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True}, session=session
    )
    errors = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(str(params["entry"].get("text")))
    browser.send("Target.closeTarget", {"targetId": target})
    return json.loads(state["result"]["value"]), errors


@pytest.fixture
def browser(tmp_path: Path):
    binary = find_browser()
    if binary is None:
        pytest.skip(
            "no Chromium found (install the Debian packages chromium and chromium-driver, "
            "as .ci/run does, or set BMS_CHROMIUM to the browser binary)"
        )
    client = PipeBrowser(binary, tmp_path / "chromium-profile")
    try:
        yield client
    finally:
        client.close()


def test_report_and_index_render_in_chromium_without_errors(browser, make_run, tmp_path):
    failing = make_run("b-overvoltage", passed=False)
    passing = make_run("a-drive", passed=True, duration_s=30.0)
    for run_dir in (failing, passing):
        build_report(run_dir)
    index = build_index(tmp_path)

    state, errors = open_page(browser, failing / "report.html")
    assert errors == []
    assert state["external"] == []
    assert len(state["images"]) == 9
    for image in state["images"]:
        assert image["complete"] and image["width"] >= 800, image["alt"]
    assert ["FAIL", "never pressure below 0.8 MPa"] in state["verdicts"]
    assert ["PASS", "contactors close"] in state["verdicts"]

    state, errors = open_page(browser, index)
    assert errors == []
    assert state["images"] == [] and state["external"] == []
    assert sorted(state["verdicts"]) == [["FAIL", "b-overvoltage"], ["PASS", "a-drive"]]
