"""A real headless Chromium for the web pages' tests (the demo, the perceptual study).

Debian's ``chromium`` and ``chromium-driver`` packages (``make system-deps`` installs them), driven through
Selenium. Without them the browser tests are skipped, unless ``COLORIZATION_REQUIRE_BROWSER=1`` (set by CI's
``.ci/run``), where a missing browser fails the test: CI never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # this machine's network is closed: without these, Chromium's own background connections fail many at a time
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1024",
)


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip (a failure under COLORIZATION_REQUIRE_BROWSER=1) naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = "Debian's chromium and chromium-driver are not installed (make system-deps)"
    if os.environ.get("COLORIZATION_REQUIRE_BROWSER") == "1":
        pytest.fail(missing)
    pytest.skip(missing)


@contextmanager
def chromium(tmp_path: Path, width: int = 1280, height: int = 1024):
    """A Selenium WebDriver on a fresh headless Chromium profile in ``tmp_path``."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers (any HTTP status), or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the server exited with status {process.returncode} before answering:\n{out}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def server(command: list[str], url: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120.0):
    """Start a server process, wait until ``url`` answers, stop it (SIGTERM, then SIGKILL) afterwards."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        wait_for_http(url, process, timeout)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
