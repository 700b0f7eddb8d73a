"""Issue 11's dashboard in a real browser: headless Chromium (Debian's `chromium`) opens `/ui` on a
three-partition pool, signs in with the administrator's client credentials through the page's own
form, and shows three partitions up; after one partition is frozen (SIGSTOP, so that it holds its
sockets but answers nothing, as a hung process does, until the supervisor replaces it) the page
shows it down. Each state is saved as a screenshot in the test-artifact folder ($TEST_ARTIFACTS,
else tests/artifacts/).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ended by a NUL byte, the browser reading fd 3 and writing fd 4), so no websocket client is needed.
It trusts exactly the pool's server key (`--ignore-certificate-errors-spki-list`)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dev_pool import free_port
from pool_support import PoolProcess

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 1700)
CALL_TIMEOUT = 30.0
PAGE_TIMEOUT = 30.0
DOWN_DEADLINE = 6.0  # the page refreshes every 2 s and a probe gives up after 1 s
MIN_PNG_BYTES = 20_000
ROWS = (
    "JSON.stringify([...document.querySelectorAll('#partitions tbody tr[data-partition]')]"
    ".map(r => [r.dataset.partition, r.dataset.state]))"
)


def artifact_dir() -> Path:
    configured = os.environ.get("TEST_ARTIFACTS")
    folder = Path(configured) if configured else Path(__file__).parents[1] / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """One headless Chromium and one page of it, over the DevTools pipe."""

    def __init__(self, profile: Path, trusted_spki: str) -> None:
        assert CHROMIUM is not None
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Above 4, so that putting them at 3 and 4 in the child cannot overwrite one another.
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def at_3_and_4() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        log = (profile.parent / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
                f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={trusted_spki}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--hide-scrollbars", "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Python's own descriptors are not inherited (PEP 446), and pass_fds would have
            # the child close 3 and 4 after they are set up.
            close_fds=False,
            preexec_fn=at_3_and_4,  # before any thread of this test starts
        )  # fmt: skip
        log.close()
        os.close(child_in)
        os.close(child_out)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=self.session,
            width=WINDOW[0],
            height=WINDOW[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._messages.put(json.loads(message))
        self._messages.put(None)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ask: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            ask["sessionId"] = session
        os.write(self._to_browser, json.dumps(ask).encode() + b"\0")
        deadline = time.monotonic() + CALL_TIMEOUT
        while self._next_id not in self._replies:
            message = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise RuntimeError("chromium closed its DevTools pipe")
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self.events.append(message)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    def evaluate(self, expression: str) -> Any:
        reply = self.call(
            "Runtime.evaluate", session=self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:60]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = PAGE_TIMEOUT) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"never true: {expression}; page says {self.status()!r}")

    def status(self) -> Any:
        return self.evaluate(
            "(document.getElementById('status') || {}).textContent + ' / ' + "
            "(document.getElementById('sign-in-error') || {}).textContent"
        )

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=self.session, url=url)
        self.wait_for(
            "document.readyState === 'complete' && !!document.getElementById('credentials-form')"
        )

    def sign_in(self, client_id: str, secret: str) -> None:
        """Fill in and submit the page's sign-in form, as an administrator would."""
        self.evaluate(
            f"document.getElementById('client-id').value = {json.dumps(client_id)};"
            f"document.getElementById('client-secret').value = {json.dumps(secret)};"
            "document.getElementById('credentials-form').requestSubmit(); true"
        )

    def partition_states(self) -> dict[str, str]:
        return dict(json.loads(self.evaluate(ROWS) or "[]"))

    def screenshot(self, path: Path) -> bytes:
        shot = self.call("Page.captureScreenshot", session=self.session, format="png")
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


def spki_pin(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, as Chromium's pin list wants."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_real_screenshot(data: bytes) -> None:
    width, height = png_size(data)
    assert (width, height) == WINDOW
    assert len(data) > MIN_PNG_BYTES, "the screenshot is nearly blank"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    started = PoolProcess(tmp_path_factory.mktemp("dashboard") / "pool", free_port()).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def browser(pool: PoolProcess, tmp_path: Path) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make system-deps)")
    opened = Browser(tmp_path / "profile", spki_pin(pool.data_dir / "tls" / "server.pem"))
    try:
        yield opened
    finally:
        opened.close()


def test_dashboard_shows_the_pool_and_a_partition_going_down(
    pool: PoolProcess, browser: Browser
) -> None:
    artifacts = artifact_dir()
    admin = pool.doc["admin"]
    browser.open(f"{pool.url}/ui/")
    browser.sign_in(admin["client_id"], admin["client_secret"])
    browser.wait_for(f"{ROWS} === JSON.stringify([['0','up'],['1','up'],['2','up']])")
    assert browser.evaluate("document.getElementById('client-secret').value") == ""
    assert browser.evaluate("document.querySelectorAll('#etcd tr[data-state=healthy]').length") == 3
    # A second refresh gives the request-rate chart its first point.
    browser.wait_for("document.getElementById('rate-total').textContent !== ''")
    healthy = browser.screenshot(artifacts / "dashboard-healthy.png")
    assert_real_screenshot(healthy)

    # Watch from partition 0's own port: through the pool port the browser could be handed
    # to the frozen partition itself, which would answer nothing.
    pids = pool.partition_pids()
    own_url = next(p["url"] for p in pool.doc["partitions"] if p["id"] == 0)
    browser.open(f"{own_url}/ui/")
    browser.sign_in(admin["client_id"], admin["client_secret"])
    browser.wait_for(f"{ROWS} === JSON.stringify([['0','up'],['1','up'],['2','up']])")
    frozen = pids[2]
    os.kill(frozen, signal.SIGSTOP)
    try:
        started = time.monotonic()
        browser.wait_for(
            f"{ROWS} === JSON.stringify([['0','up'],['1','up'],['2','down']])", DOWN_DEADLINE
        )
        shown_after = time.monotonic() - started
        down = browser.screenshot(artifacts / "dashboard-partition-down.png")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)  # unless the supervisor replaced it already
    assert_real_screenshot(down)
    assert shown_after < DOWN_DEADLINE
    assert browser.evaluate(
        "document.querySelector('#partitions tr[data-partition=\"2\"]').textContent"
    ).count("timed out")
    # The page kept to its Content-Security-Policy: nothing was refused.
    refused = [e for e in browser.events if "Content Security Policy" in json.dumps(e)]
    assert refused == []
