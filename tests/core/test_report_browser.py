"""The report as a person sees it: a real run's page opened in headless Chromium, every image
loaded, no console error, a screenshot kept as an artefact.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, messages separated by NUL bytes): no port, no websocket library, no
browser download. CI installs Debian's ``chromium`` (.ci/run); a missing browser is an error
here, not a skip, because a skipped browser test proves nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
ARTIFACTS_ENV = "RETROFIT_ARTIFACTS"


def browser_executable() -> str:
    """The installed Chromium; an error that says how to install it otherwise."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Chromium found: apt-get install -y chromium (CI's .ci/run does it)")


class Browser:
    """One headless Chromium page, driven with DevTools protocol commands over a pipe."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                     "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-pipe",
                     "about:blank"]
        # Chromium reads commands on fd 3 and answers on fd 4: bash's redirections put the
        # pipe ends there in the child (no preexec_fn, which is unsafe once threads run); both are
        # moved above 10 first (dash takes single-digit fds only, hence bash), so that neither
        # redirection overwrites the other's source
        child_read, child_write = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                                   for fd in (to_browser_read, from_browser_write))
        launch = f'exec "$0" "$@" 3<&{child_read} 4>&{child_write}'
        self.log = profile.with_name(profile.name + ".log")  # Chromium's stderr, quoted if it dies
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["/bin/bash", "-c", launch, browser_executable(), *arguments],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            pass_fds=(child_read, child_write))
        for fd in (child_read, child_write):
            os.close(fd)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._mark = 0  # events before the page being checked
        self._loaded = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._lock:
                            waiting = self._replies.get(message["id"])
                        if waiting is not None:
                            waiting.put(message)
                    else:
                        self.events.append(message)
                        if message.get("method") == "Page.loadEventFired":
                            self._loaded.set()

    def send(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command (to the page's session when ``session``) and return its result."""
        with self._lock:
            self._next_id += 1
            identifier = self._next_id
            self._replies[identifier] = reply = queue.Queue()
        message: dict[str, Any] = {"id": identifier, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            self.process.wait(timeout=10)
            raise RuntimeError(f"Chromium exited (code {self.process.returncode}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}") from None
        try:
            answer = reply.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer {method} within {timeout} s") from None
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def open(self, page: Path, timeout: float = 60) -> None:
        """Load ``page`` and wait for its load event; console errors are counted from here on."""
        self._loaded.clear()
        self._mark = len(self.events)
        self.send("Page.navigate", session=True, url=page.resolve().as_uri())
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"{page} did not finish loading within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def images(self) -> list[dict[str, Any]]:
        """Every <img> once it decoded or failed: its source (shortened), width and whether it decoded."""
        return self.evaluate(
            "Promise.all(Array.from(document.images).map(i => i.decode().then(() => true, () => false)"
            ".then(ok => ({src: i.getAttribute('src').slice(0, 48), width: i.naturalWidth, decoded: ok}))))")

    def console_errors(self) -> list[str]:
        """console.error/assert calls, uncaught exceptions and error log entries (failed loads) so far."""
        errors = []
        for event in self.events[self._mark:]:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                              for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, beyond the viewport."""
        import base64

        size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
        data = self.send("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)


@pytest.fixture
def browser(tmp_path: Path):
    session = Browser(tmp_path / "profile")
    yield session
    session.close()


def check_page(browser: Browser, page: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Open ``page``; return its images that did not load and the console errors."""
    browser.open(page)
    images = browser.images()
    broken = [image for image in images if not image["decoded"] or image["width"] <= 0]
    return [*broken, *([{"problem": "no image at all"}] if not images else [])], browser.console_errors()


def keep_artefact(path: Path) -> None:
    """Copy a test artefact to $RETROFIT_ARTIFACTS when it is set (CI collects it there)."""
    target = os.environ.get(ARTIFACTS_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / path.name)


# -- the check can fail -----------------------------------------------------------------------
def test_the_check_catches_broken_images_and_console_errors(browser, tmp_path):
    good = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><meta charset='utf-8'>"
                    f"<img id='good' src='data:image/png;base64,{good}'>"
                    "<img id='corrupt' src='data:image/png;base64,iVBORw0KGgoAAAA'>"  # a cut-off PNG
                    "<img id='missing' src='no-such-file.png'>"
                    "<script>console.error('deliberate')</script>")
    broken, errors = check_page(browser, page)
    assert [image["src"][:22] for image in broken] == ["data:image/png;base64,", "no-such-file.png"]
    assert any("deliberate" in error for error in errors), errors
    assert any("no-such-file.png" in error or "ERR_FILE_NOT_FOUND" in error for error in errors), errors
    clean = tmp_path / "clean.html"
    clean.write_text(f"<!doctype html><meta charset='utf-8'><img src='data:image/png;base64,{good}'>")
    assert check_page(browser, clean) == ([], [])


# -- a real run's report ----------------------------------------------------------------------
def test_a_real_runs_report_loads_every_image_without_console_errors(browser, tmp_path, capsys):
    from retrofit.cli import main

    run_dir = tmp_path / "R"
    assert main(["toy", "tune", "--budget", "30", "--executor", "serial", "--out", str(run_dir),
                 "--set", "run.validate_every=10", "--set", "toy.fault=raise", "--set", "toy.fault_rate=0.2"]) == 0
    report = tmp_path / "report.html"
    assert main(["report", str(run_dir), "-o", str(report)]) == 0
    assert f"wrote {report}" in capsys.readouterr().out
    broken, errors = check_page(browser, report)
    assert broken == [] and errors == []
    # the page's figures are all there: result, loss curve, gap, knobs, failures, time
    titles = browser.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    for title in ("Baseline vs chosen result", "Loss over the run", "Train vs validation",
                  "Knobs of the chosen candidate", "Failures by reason", "Time", "Run"):
        assert title in titles
    alts = browser.evaluate("Array.from(document.images).map(i => i.alt)")
    assert set(alts) == {"loss curve", "train-validation gap", "knob values", "failures by reason", "wall time split"}
    assert browser.evaluate("document.querySelector('.status').textContent").startswith("status: finished")
    shot = browser.screenshot(tmp_path / "report-screenshot.png")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    keep_artefact(shot)
    keep_artefact(report)
