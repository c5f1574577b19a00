"""python -m colorization.demo: the real server, driven in a real headless Chromium (tests/helpers/browser.py)."""

from __future__ import annotations

import io
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image
from skimage.color import rgb2lab

from colorization.serving.demo_page import colorize_file
from helpers.browser import browser_paths, chromium, free_port, server
from helpers.config import REPO

SRC = str(REPO / "src")


def wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def test_the_page_in_a_real_browser(narrow_checkpoint, tmp_path):
    """Upload a real photo: the before / after slider and the full-resolution download (in view, without scrolling)
    come back, the result at the photo's size and in color; a sample's thumbnail colorizes that sample; clearing the
    photo clears the page with no error; a file that is not an image shows the message.
    COLORIZATION_SCREENSHOT_DIR=DIR keeps the page's screenshots there."""
    browser_paths()  # skip (or fail on CI) before starting the server when there is no browser
    from selenium.webdriver.common.by import By

    photo = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()[:, 20:]).save(photo, quality=92)  # 431 x 300: not the network's size
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "colorization.demo", f"ckpt_path={narrow_checkpoint}", f"port={port}"]
    cmd += ["device=cpu", f"hydra.run.dir={tmp_path}/run"]
    env = {"PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "GRADIO_ANALYTICS_ENABLED": "False"}
    shots = []

    def shot(name: str) -> None:
        shots.append(tmp_path / name)
        driver.save_screenshot(str(shots[-1]))

    def body() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    with server(cmd, url, env=env, cwd=tmp_path, timeout=300), chromium(tmp_path) as driver:
        driver.get(url)
        upload = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]"))
        upload.send_keys(str(photo))  # the hidden <input type=file> of Gradio's upload area
        link = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#download a[href]"))
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#slider img")) == 2)  # before and after
        wait(
            driver,
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#original img") and d.find_elements(By.CSS_SELECTOR, "#strip img")
            ),
        )
        with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
            result = Image.open(io.BytesIO(response.read()))
            result.load()
        assert result.size == (431, 300) and result.mode == "RGB"  # the full-resolution result
        lab = rgb2lab(np.asarray(result))
        assert np.hypot(lab[..., 1], lab[..., 2]).mean() > 2.0  # in color, not gray
        source = rgb2lab(np.asarray(Image.open(photo)))[..., 0]
        assert np.abs(lab[..., 0] - source).mean() < 1.5  # with the photo's own lightness
        bottom = driver.execute_script("return arguments[0].getBoundingClientRect().bottom", link)
        assert bottom < driver.execute_script("return window.innerHeight"), "the download is below the fold"
        shot("screenshot.png")

        thumbnails = driver.find_elements(By.CSS_SELECTOR, "#samples button img, #samples img")
        assert len(thumbnails) >= 5  # the samples as pictures, not names
        thumbnails[1].click()  # coffee
        wait(driver, lambda d: "coffee_colorized" in d.find_element(By.CSS_SELECTOR, "#download").text)
        shot("screenshot_sample.png")

        clear = driver.find_element(By.CSS_SELECTOR, "#photo button[aria-label='Clear'], #photo button[title='Clear']")
        clear.click()
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#slider img"))
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#download a[href]"))
        assert "Error" not in body(), body()[:500]  # cleared quietly: no toast, no error badges
        shot("screenshot_cleared.png")

        driver.get(url)  # a fresh page, then a file that is not an image
        (tmp_path / "notes.txt").write_text("a shopping list, not a photo")
        upload = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]"))
        upload.send_keys(str(tmp_path / "notes.txt"))
        message = "notes.txt is not an image this demo can read"
        wait(driver, lambda d: message in d.find_element(By.TAG_NAME, "body").text, timeout=60)
        assert "Traceback" not in body() and "/tmp/" not in body()  # one line, no stack trace, no server paths
        shot("screenshot_bad_upload.png")
    if keep := os.environ.get("COLORIZATION_SCREENSHOT_DIR"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, Path(keep) / path.name)


def test_the_page_action_without_a_browser(narrow_checkpoint, tmp_path):
    """The page's one action in Python: a gray photo in, the gray input, the colorization (full size), the strip (one
    frame per temperature) and the PNG file out; the user's mistakes are one-line ValueErrors."""
    from colorization import Colorizer

    colorizer = Colorizer.from_checkpoint(narrow_checkpoint, device="cpu")
    Image.fromarray(skimage.data.camera()[::2, ::3]).save(tmp_path / "camera.png")  # 256 x 171, grayscale
    photo, gray, color, strip, path = colorize_file(
        colorizer, str(tmp_path / "camera.png"), 0.38, [1.0, 0.38, 0.0], tmp_path
    )
    assert photo.size == gray.size == color.size == (171, 256) and Image.open(path).size == (171, 256)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(color))
    assert strip.size == (3 * 171, 256 + 22)  # the frames over a band naming each one's T
    band = np.asarray(strip)[256:]
    assert (band < 128).any(axis=2).any() and band[:, :, 0].mean() > 200  # dark labels on white
    assert np.ptp(np.asarray(gray).astype(int), axis=2).max() <= 1  # gray: R = G = B
    with pytest.raises(ValueError, match="Upload a photo"):
        colorize_file(colorizer, None, 0.38, [], tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^empty.png is not an image this demo can read"):
        colorize_file(colorizer, str(tmp_path / "empty.png"), 0.38, [], tmp_path)
