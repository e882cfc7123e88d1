"""A real headless Chromium driven over the DevTools protocol, for the report tests.

The browser is the system's (Debian's ``chromium``; nothing is downloaded), started with
``--remote-debugging-port=0`` and a throw-away profile; the port is read from the profile's
``DevToolsActivePort`` file, and one page target is driven with ``websocket-client``. The page's
console messages, uncaught exceptions, log entries and network requests are recorded as events,
so a test can assert that a page loaded with no error and fetched nothing.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The path of a Chromium-family browser on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Page:
    """One page target: send commands, collect the events that arrive in between."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        import websocket  # websocket-client, a test dependency

        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.timeout = timeout

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if message.get("id") == msg_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)
        raise BrowserError(f"{method}: no answer within {self.timeout} s")

    def wait_for(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        for message in self.events:
            if message["method"] == event:
                return message
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return message
        raise BrowserError(f"no {event} within {timeout or self.timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = {**clip, "scale": clip.get("scale", 1)}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            method, params = e["method"], e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error", "assert", "warning"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in (
                    "error", "warning"):
                out.append(f"log: {params['entry']}")
        return out

    def requests(self) -> list[str]:
        """The URL of every request the page made."""
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass


class Chromium:
    """A headless Chromium process with a throw-away profile; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280,
                 height: int = 900) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="ddl-chromium-"))
        args = [
            exe, "--headless=new", "--disable-gpu", "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-component-update", "--disable-default-apps", "--mute-audio",
            "--hide-scrollbars", f"--window-size={width},{height}", "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            self.port = self._port()
        except BaseException:
            self.close()
            raise

    def _port(self, timeout: float = 60.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise BrowserError(f"chromium did not open its DevTools port within {timeout} s")

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as r:
            targets = json.loads(r.read())
        for target in targets:
            if target.get("type") == "page":
                return Page(target["webSocketDebuggerUrl"])
        raise BrowserError(f"no page target among {targets}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_page(browser: Chromium, url: str) -> Page:
    """Navigate a page to ``url`` with console, log and network recording on; waits for load."""
    page = browser.page()
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.send(f"{domain}.enable")
    page.send("Page.navigate", url=url)
    page.wait_for("Page.loadEventFired")
    return page


def chart_boxes(page: Page, selector: str = "figure.chart svg") -> list[dict[str, Any]]:
    """Document-space boxes of every element matching ``selector``, with its drawn shapes."""
    script = f"""
    Array.from(document.querySelectorAll({json.dumps(selector)})).map(el => {{
        const r = el.getBoundingClientRect();
        return {{x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width,
                 height: r.height, shapes: el.querySelectorAll('path, use, rect').length,
                 name: el.closest('figure') ? el.closest('figure').dataset.chart : ''}};
    }})"""
    value = page.evaluate(script)
    return list(value or [])


def ink_fraction(png: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> float:
    """The share of pixels of a PNG that differ from ``background``."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB"))
    if rgb.size == 0:
        return 0.0
    return float(np.any(rgb != np.array(background, dtype=rgb.dtype), axis=-1).mean())


def colour_count(png: bytes) -> int:
    """How many distinct colours a PNG has."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    return int(np.unique(rgb, axis=0).shape[0])
