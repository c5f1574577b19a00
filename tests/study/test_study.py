"""python -m colorization.study: the study's photos and pairs, a scripted participant in a real headless Chromium
(practice with feedback, timed trials, a server restart, a reload during a trial, a second visit), the report's
numbers recomputed from the SQLite rows, and the bootstrap interval against the Wilson interval."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from omegaconf import OmegaConf
from PIL import Image
from scipy.stats import norm
from skimage.color import lab2rgb, rgb2lab

from colorization.data.sources import sample_photo_dir
from colorization.errors import ConfigError
from colorization.study.db import connect
from colorization.study.make import make
from colorization.study.report import bootstrap_interval, report
from helpers.browser import chromium, free_port, server
from helpers.config import REPO, compose
from helpers.evaluation import center_crop

PHOTOS = ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "chelsea.png")
DISPLAY_MS = 1000  # the paper's one second
SCREENSHOTS = os.environ.get("COLORIZATION_SCREENSHOTS")  # e.g. experiments/study/screenshots


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        (root / name).symlink_to(sample_photo_dir() / name)
    return root


def make_study(photo_dir: Path, out: Path, overrides: list[str]) -> Path:
    base = ["data=folder", f"data.root={photo_dir}", "data.num_workers=0", f"study={out / 'study'}"]
    base += ["protocol.practice_trials=2", "protocol.test_trials=3", "device=cpu"]
    return make(compose([*base, *overrides], out, config_name="study"))


@pytest.fixture(scope="module")
def baseline_study(photo_dir, tmp_path_factory) -> Path:
    return make_study(photo_dir, tmp_path_factory.mktemp("baseline_study"), [])


# ---- make ------------------------------------------------------------------------------------
def test_make_writes_the_photos_the_pairs_and_the_protocol(photo_dir, trained_checkpoint, tmp_path):
    overrides = [f"models={{full: {trained_checkpoint}}}", "protocol.display_ms=800", "protocol.size=64"]
    study = make_study(photo_dir, tmp_path, overrides)  # 64 x 64 keeps the network cheap; the browser test uses 256
    config = OmegaConf.load(study / "study.yaml")
    assert dict(config.protocol) == {"size": 64, "display_ms": 800, "practice_trials": 2, "test_trials": 3}
    assert list(config.methods) == ["full", "random", "gray"]
    assert config.methods.full.paper_row == "Ours (full)"  # the tiny checkpoint was trained with the full method
    manifest = json.loads((study / "manifest.json").read_text())
    practice = {p["pair"] for p in manifest["practice"]["gray"]}
    test = {p["pair"] for p in manifest["test"]["gray"]}
    assert len(practice) == 2 and len(test) == len(PHOTOS) - 2 and not practice & test
    sides = [p["fake_side"] for phase in manifest.values() for pairs in phase.values() for p in pairs]
    assert set(sides) == {"left", "right"}

    # each photo as the paper's protocol crops it, and its recolorizations, recomputed with scikit-image
    module = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert module["hyper_parameters"]["loss"]["name"] == "rebalanced"
    files = sorted(photo_dir.iterdir())
    for i, source in enumerate(files):
        real = np.asarray(Image.open(study / "images" / "real" / f"{i:04d}.png"))
        assert np.abs(real.astype(int) - center_crop(source, 64)).max() <= 1
        lab = rgb2lab(real)
        gray = np.asarray(Image.open(study / "images" / "gray" / f"{i:04d}.png")).astype(float)
        expected = lab2rgb(np.dstack([lab[..., 0], np.zeros((64, 64, 2))])) * 255
        assert np.abs(gray - expected).mean() < 1.0
        random = np.asarray(Image.open(study / "images" / "random" / f"{i:04d}.png")).astype(float)
        previous = rgb2lab(np.asarray(Image.open(study / "images" / "real" / f"{(i - 1) % len(files):04d}.png")))
        expected = np.clip(lab2rgb(np.dstack([lab[..., 0], previous[..., 1:]])), 0, 1) * 255
        assert np.abs(random - expected).mean() < 1.5
        full = np.asarray(Image.open(study / "images" / "full" / f"{i:04d}.png")).astype(float)
        assert full.shape == (64, 64, 3)  # the photo's own L, where no channel was clipped to the sRGB gamut
        inside = ((full > 0) & (full < 255)).all(-1)
        assert inside.sum() >= 100 and np.abs(rgb2lab(full / 255)[..., 0] - lab[..., 0])[inside].mean() < 1.0
    rows = (study / "pairs.csv").read_text().splitlines()
    assert rows[0] == "method,phase,pair,left,right,fake_side" and len(rows) == 1 + 3 * len(PHOTOS)


def test_make_refuses_bad_configs_in_one_line(photo_dir, baseline_study, tmp_path):
    with pytest.raises(ConfigError, match="the protocol needs 41"):
        make_study(photo_dir, tmp_path, ["protocol.practice_trials=1", "protocol.test_trials=40"])
    with pytest.raises(ConfigError, match="baselines"):
        make_study(photo_dir, tmp_path, ["baselines=[sepia]"])
    with pytest.raises(ConfigError, match="already there"):
        make_study(photo_dir, baseline_study.parent, [])


# ---- the page, in a real browser -------------------------------------------------------------
# An observer of its own, in the page: every animation frame, whether both photos are on screen, and when that changes.
OBSERVER = """
window.visible = [];
const seen = () => ["left-image", "right-image"].every((id) => {
  const im = document.getElementById(id);
  return im.getAttribute("src") && im.complete && im.naturalWidth > 0 && im.offsetParent !== null;
});
let last = false;
(function frame(now) {
  const v = seen();
  if (v !== last) { window.visible.push({visible: v, at: performance.now()}); last = v; }
  requestAnimationFrame(frame);
})();
"""


def rows_of(study: Path) -> list[dict]:
    db = sqlite3.connect(study / "answers.sqlite")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY participant, trial")]
    db.close()
    return rows


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_participant_in_chromium(baseline_study, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    study, port = baseline_study, free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "colorization.study", "serve", f"study={study}", f"server.port={port}"]
    command += [f"paths.log_dir={tmp_path / 'logs'}"]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    answers: dict[int, str] = {}  # trial -> the side clicked

    with chromium(tmp_path) as driver:
        wait = WebDriverWait(driver, 30, poll_frequency=0.02)
        on = lambda name: wait.until(lambda d: d.execute_script("return window.studyScreen") == name)  # noqa: E731

        def open_page() -> None:
            driver.get(f"{url}/?participant=alice")
            wait.until(lambda d: d.execute_script("return window.studyReady === true"))
            driver.execute_script(OBSERVER)

        def trial_number() -> int:
            """The trial on screen, from its photos' addresses against the participant's rows in SQLite."""
            return next(r["trial"] for r in rows_of(study) if r["participant"] == "alice" and r["status"] == "shown")

        def timed_trial(side: str, screenshot: str | None = None) -> int:
            """Wait for the photos, check they are hidden after the display time, answer ``side``."""
            on("trial")
            wait.until(lambda d: d.execute_script("return window.visible.some((e) => e.visible)"))
            if screenshot:
                driver.save_screenshot(str(shots / screenshot))
            on("question")
            trial = trial_number()
            images = driver.find_elements(By.CSS_SELECTOR, "#left-image, #right-image")
            assert not any(im.is_displayed() or im.get_attribute("src") for im in images)  # hidden until the answer
            events = driver.execute_script("return window.visible")
            shown, hidden = events[-2], events[-1]
            assert shown["visible"] and not hidden["visible"]
            assert DISPLAY_MS - 20 <= hidden["at"] - shown["at"] <= DISPLAY_MS + 150  # one second, within a few frames
            if screenshot:
                driver.save_screenshot(str(shots / "answer.png"))
            driver.find_element(By.ID, f"answer-{side}").click()
            answers[trial] = side
            return trial

        with server(command, f"{url}/api/config", env=env):
            open_page()
            assert "one second" in driver.find_element(By.ID, "instructions").text
            driver.save_screenshot(str(shots / "instructions.png"))
            driver.find_element(By.ID, "start").click()
            # practice: two trials, each with feedback naming the fake's side as SQLite has it
            for k, side in enumerate(["left", "right"]):
                trial = timed_trial(side, "trial.png" if k == 0 else None)
                on("feedback")
                fake_side = rows_of(study)[trial]["fake_side"]
                text = driver.find_element(By.ID, "feedback").text
                assert f"The fake was the {fake_side} photo." in text
                assert ("Correct!" in text) == (side == fake_side)
                if k == 0:
                    driver.save_screenshot(str(shots / "feedback.png"))
                driver.find_element(By.ID, "next").click()
            first_test = timed_trial("left")  # a test trial: no feedback, the next trial comes at once
            for side in ("left", "right"):  # the photos of a trial are served while it is open, and never after
                with pytest.raises(urllib.error.HTTPError, match="404"):
                    urllib.request.urlopen(f"{url}/image/alice/{first_test}/{side}")
            on("trial")
            assert (
                post(
                    f"{url}/api/answer",
                    {"participant": "alice", "trial": 0, "answer": "right", "answer_ms": 1, "shown_ms": 1},
                )[0]
                == 409
            )  # no second answer
            open_trial = rows_of(study)[3]  # on screen now: its photos come from opaque addresses, the fake on its side
            for side in ("left", "right"):
                with urllib.request.urlopen(f"{url}/image/alice/3/{side}") as r:
                    served = r.read()
                folder = open_trial["method"] if side == open_trial["fake_side"] else "real"
                assert served == (study / "images" / folder / f"{open_trial['pair']}.png").read_bytes()
            wait.until(lambda d: d.execute_script("return window.studyScreen") == "question")
        # the server stops (mid-trial: the open trial was shown, not answered); SQLite holds every answer given
        before = rows_of(study)
        assert {r["trial"]: r["answer"] for r in before if r["status"] == "answered"} == answers
        assert first_test == 2 and before[3]["status"] == "shown"

        with server(command, f"{url}/api/config", env=env):  # a restart, then a second visit
            open_page()
            driver.find_element(By.ID, "start").click()
            on("trial")
            wait.until(lambda d: d.execute_script("return window.visible.some((e) => e.visible)"))
            interrupted_trial = trial_number()
            assert interrupted_trial == 4  # trial 3 was open when the page went away: never shown again
            driver.refresh()  # a reload during the display of trial 4
            wait.until(lambda d: d.execute_script("return window.studyReady === true"))
            driver.execute_script(OBSERVER)
            driver.find_element(By.ID, "start").click()
            on("done")  # 2 practice + 3 test trials: trials 3 and 4 were interrupted, none is left
            # bob gets the other method (balanced assignment) and finishes through the API
            status, bob = post(f"{url}/api/session", {"participant": "bob"})
            assert status == 200 and bob["method"] != rows_of(study)[0]["method"]
            bob_answers = {}
            for _ in range(5):
                with urllib.request.urlopen(f"{url}/api/next?participant=bob") as r:
                    trial = json.loads(r.read())
                assert post(f"{url}/api/show", {"participant": "bob", "trial": trial["trial"]})[0] == 200
                fake_side = next(r["fake_side"] for r in rows_of(study) if r["participant"] == "bob"
                                 and r["trial"] == trial["trial"])  # fmt: skip
                side = "right" if fake_side == "left" else "left"  # always takes the real photo for the fake
                assert (
                    post(
                        f"{url}/api/answer",
                        {
                            "participant": "bob",
                            "trial": trial["trial"],
                            "answer": side,
                            "answer_ms": 150.0,
                            "shown_ms": 1000.0,
                        },
                    )[0]
                    == 200
                )
                bob_answers[trial["trial"]] = side

    rows = rows_of(study)
    alice = [r for r in rows if r["participant"] == "alice"]
    assert [r["status"] for r in alice] == ["answered"] * 3 + ["interrupted"] * 2
    assert all(r["answer"] is None for r in alice[3:])
    assert {r["trial"]: r["answer"] for r in alice if r["answer"]} == answers
    assert all(DISPLAY_MS - 20 <= r["shown_ms"] <= DISPLAY_MS + 150 and r["answer_ms"] > 0 for r in alice[:3])
    assert [r["phase"] for r in alice] == ["practice"] * 2 + ["test"] * 3
    bob_rows = [r for r in rows if r["participant"] == "bob"]
    assert {r["trial"]: r["answer"] for r in bob_rows} == bob_answers
    assert all(r["answer"] != r["fake_side"] for r in bob_rows)  # bob always took the real photo for the fake

    # the report's fooling rates, recomputed from the rows
    cfg = compose([f"study={study}"], tmp_path, config_name="study").report
    result = report(study, cfg, seed=0, out=tmp_path / "report")
    measured = {r["method"]: r for r in result["all"]}
    for method in {r["method"] for r in rows}:
        test = [r for r in rows if r["method"] == method and r["phase"] == "test" and r["status"] == "answered"]
        assert measured[method]["trials"] == len(test)
        expected = 100 * sum(r["answer"] != r["fake_side"] for r in test) / len(test)
        assert measured[method]["rate"] == pytest.approx(expected)
    assert measured[bob["method"]]["rate"] == 100.0
    flagged = {p["participant"] for p in result["participants"] if p["flags"]}
    assert "bob" in flagged  # a median answer of 150 ms is faster than the 200 ms threshold
    assert next(r for r in result["unflagged"] if r["method"] == bob["method"])["participants"] == 0
    assert (tmp_path / "report" / "fooling_rates.png").stat().st_size > 0


# ---- the report ------------------------------------------------------------------------------
def synthetic_study(root: Path, answers: dict[str, tuple[str, list[tuple[str, str, float]]]]) -> Path:
    """A study directory whose SQLite holds the given answers: participant -> (method, [(fake_side, answer, ms)]),
    plus one practice trial and one interrupted trial each, which the report must leave out."""
    root.mkdir(parents=True)
    methods = {"full": {"paper_row": "Ours (full)"}, "gray": {"paper_row": "gray"}, "l2": {"paper_row": "Ours (L2)"}}
    protocol = {"size": 256, "display_ms": 1000, "practice_trials": 1, "test_trials": 40}
    OmegaConf.save(OmegaConf.create({"protocol": protocol, "seed": 0, "methods": methods}), root / "study.yaml")
    (root / "manifest.json").write_text(json.dumps({"practice": {}, "test": {}}))
    db = connect(root / "answers.sqlite")
    for pid, (method, trials) in answers.items():
        db.execute("INSERT INTO participants VALUES (?, ?, 0, NULL)", (pid, method))
        rows = [(pid, 0, "practice", method, "p", "left", "answered", "right", 900.0, 1000.0)]
        rows += [(pid, 1, "test", method, "x", "left", "interrupted", None, None, None)]
        rows += [
            (pid, i + 2, "test", method, f"{i}", s, "answered", a, ms, 1000.0) for i, (s, a, ms) in enumerate(trials)
        ]
        db.executemany(
            "INSERT INTO trials (participant, trial, phase, method, pair, fake_side, status, answer, answer_ms, shown_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
    return root


def test_report_fooling_rates_flags_and_paper_column(tmp_path):
    rng = np.random.default_rng(3)

    def person(p_fooled: float, n: int = 40, ms: float = 700.0, side: str | None = None):
        fake = rng.choice(["left", "right"], n)
        fooled = rng.random(n) < p_fooled
        answer = np.where(fooled, np.where(fake == "left", "right", "left"), fake)
        if side:
            answer = np.full(n, side)
        return [(str(f), str(a), float(ms + rng.normal(0, 50))) for f, a in zip(fake, answer, strict=True)]

    answers = {f"full{i}": ("full", person(0.3)) for i in range(6)}
    answers |= {f"gray{i}": ("gray", person(0.1, n=30)) for i in range(5)}
    answers["fast"] = ("full", person(0.5, ms=120.0))
    answers["lefty"] = ("gray", person(0.5, side="left"))
    study = synthetic_study(tmp_path / "study", answers)
    cfg = compose([f"study={study}"], tmp_path, config_name="study").report
    result = report(study, cfg, seed=0)

    def rate(people):
        trials = [t for pid in people for t in answers[pid][1]]
        return 100 * np.mean([fake != answer for fake, answer, _ in trials]), len(trials)

    for key, keep in (("all", lambda pid: True), ("unflagged", lambda pid: pid not in ("fast", "lefty"))):
        measured = {r["method"]: r for r in result[key]}
        for method in ("full", "gray"):
            expected, n = rate([pid for pid, (m, _) in answers.items() if m == method and keep(pid)])
            assert measured[method]["rate"] == pytest.approx(expected) and measured[method]["trials"] == n
            assert measured[method]["low"] < measured[method]["rate"] < measured[method]["high"]
        assert measured["l2"]["participants"] == 0 and measured["l2"]["rate"] is None
    flagged = {p["participant"]: p["flags"] for p in result["participants"] if p["flags"]}
    assert set(flagged) == {"fast", "lefty"}
    assert "median answer" in flagged["fast"][0] and "one side" in flagged["lefty"][0]
    assert result["paper"] == {"full": 32.3, "gray": None, "l2": 21.2}

    text = (study / "report" / "report.md").read_text()
    assert "32.3 (confirmed in the paper's text)" in text and "21.2 [unverified]" in text
    assert "| fast | full |" in text and "| lefty | gray |" in text
    png = Image.open(study / "report" / "fooling_rates.png")
    assert png.size[0] > 300 and np.asarray(png.convert("L")).std() > 10  # a chart, not a blank image


def wilson(fooled: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a binomial proportion, written out."""
    z = norm.ppf(0.5 + confidence / 2)
    p = fooled / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def test_bootstrap_interval_matches_the_binomial_for_identical_participants():
    """Identical participants answering independently: the trials are one binomial sample, so the bootstrap over
    participants must give the Wilson interval's width, and cover the true rate about 95 % of the time."""
    rng = np.random.default_rng(0)
    p, participants, trials, repetitions = 0.3, 40, 40, 200
    fooled = rng.binomial(trials, p, size=(repetitions, participants)).astype(float)
    counts = np.full(participants, float(trials))
    widths, covered = [], 0
    for k in range(repetitions):
        low, high = bootstrap_interval(fooled[k], counts, 2000, 0.95, np.random.default_rng(k))
        w_low, w_high = wilson(fooled[k].sum(), participants * trials, 0.95)
        widths.append((high - low) / (w_high - w_low))
        covered += low <= p <= high
    assert abs(np.mean(widths) - 1) < 0.15 and abs(np.median(widths) - 1) < 0.15
    assert covered >= 0.9 * repetitions


def test_the_command_line(tmp_path):
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "colorization.study", *args, f"paths.log_dir={tmp_path / 'logs'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    usage = subprocess.run([sys.executable, "-m", "colorization.study"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: python -m colorization.study make|serve|report" in usage.stderr
    with pytest.raises(ConfigError, match="not a study directory"):
        report(tmp_path / "nowhere", compose([], tmp_path, config_name="study").report, seed=0)
    study = synthetic_study(tmp_path / "study", {"p1": ("full", [("left", "right", 600.0), ("right", "right", 700.0)])})
    done = run("report", f"study={study}", "report.bootstrap_samples=100")
    assert done.returncode == 0, done.stderr
    assert "| full | Ours (full) | 1 | 2 | 50.0 [50.0, 50.0]" in done.stdout
    assert (study / "report" / "report.json").is_file()


# ---- a participant is a stranger: the server enforces the protocol and its limits -------------------------------
@pytest.fixture
def served_study(photo_dir, tmp_path):
    """A fresh study (2 practice + 3 test trials) served by the real command on 127.0.0.1."""
    study = make_study(photo_dir, tmp_path / "make", [])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "colorization.study", "serve", f"study={study}", f"server.port={port}",
               f"paths.log_dir={tmp_path / 'logs'}"]  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with server(command, f"{url}/api/config", env=env):
        yield study, url


def call(url: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_study_server_refuses_what_a_careful_attacker_sends_and_stays_up(served_study):
    study, url = served_study
    # a 100 MB user agent: 413 from its Content-Length, before the body is read or stored
    import http.client

    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    connection.putrequest("POST", "/api/session")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(100_000_000))
    connection.endheaders()
    connection.send(b'{"participant": "p1", "user_agent": "' + b"x" * 1_000_000)  # the server answers at once
    assert connection.getresponse().status == 413
    connection.close()
    # the same streamed without a length (chunked): counted as it comes, 413 past the limit
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    connection.putrequest("POST", "/api/session")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for _ in range(40):
        connection.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
    connection.send(b"0\r\n\r\n")
    assert connection.getresponse().status == 413
    connection.close()
    # participant ids: a safe set of characters and a length, or 422 (the page says why before asking)
    for bad in ("a/b", ".", "..", "   ", "<img src=x onerror=alert(1)>", "a|b\nc", "x" * 65, ""):
        assert call(url, "/api/session", {"participant": bad})[0] == 422, bad
    assert call(url, "/api/session", {"participant": "p1", "user_agent": "y" * 513})[0] == 422
    assert call(url, "/api/session", {"participant": "p1", "user_agent": "Mozilla/5.0"})[0] == 200
    assert call(url, "/api/session", {"participant": "p1", "extra": 1})[0] == 422
    # only the next trial can be shown (no skipping the practice), one at a time; photos only of the shown trial
    assert call(url, "/image/p1/0/left")[0] == 404  # the next trial, not shown yet
    assert call(url, "/image/p1/4/left")[0] == 404  # a trial ahead
    assert call(url, "/api/show", {"participant": "p1", "trial": 3})[0] == 409
    assert call(url, "/api/show", {"participant": "p1", "trial": 0})[0] == 200
    assert call(url, "/api/show", {"participant": "p1", "trial": 1})[0] == 409  # a second open trial
    assert call(url, "/image/p1/0/left")[0] == 200
    assert call(url, "/image/p1/1/right")[0] == 404
    assert call(url, "/image/p1/0/up")[0] == 422
    # times: finite and in range; trial numbers bounded (2**70 overflowed SQLite: a 500)
    answer = {"participant": "p1", "trial": 0, "answer": "left", "shown_ms": 1000.0}
    for ms in (1e308, -1.0):
        assert call(url, "/api/answer", {**answer, "answer_ms": ms})[0] == 422
    assert call(url, "/api/answer", raw=json.dumps({**answer, "answer_ms": float("inf")}).encode())[0] == 422
    assert call(url, "/api/show", {"participant": "p1", "trial": 2**70})[0] == 422
    assert call(url, "/image/p1/1180591620717411303424/left")[0] == 422
    assert call(url, "/api/next?participant=a%2Fb")[0] == 422
    assert call(url, "/api/answer", {**answer, "answer_ms": 812.0})[0] == 200
    assert call(url, "/image/p1/0/left")[0] == 404  # answered: its photos are gone
    status, body = call(url, "/api/config")  # still up
    assert status == 200 and json.loads(body)["display_ms"] == DISPLAY_MS
    with connect(study / "answers.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 1
        assert db.execute("SELECT MAX(LENGTH(user_agent)) FROM participants").fetchone()[0] == len("Mozilla/5.0")


def test_the_report_escapes_what_participants_wrote_and_writes_valid_json(tmp_path):
    """Ids from a database written before the server's rule (or by hand): no markup, no broken table in report.md;
    report.json parses as strict JSON (an infinite time becomes null)."""
    hostile = "<img src=x onerror=alert(1)>|col\nrow"
    answers = {hostile: ("full", [("left", "left", 10.0)] * 5), "fast": ("gray", [("left", "right", float("inf"))])}
    study = synthetic_study(tmp_path / "study", answers)
    report(study, compose([], tmp_path, config_name="study").report, seed=0)
    md = (study / "report" / "report.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;&#124;col row" in md
    assert all(line.count("|") == md.splitlines()[-1].count("|") for line in md.splitlines()[-3:])
    text = (study / "report" / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"report.json holds {name}"))
    assert {p["participant"] for p in data["participants"]} == {hostile, "fast"}


def test_the_study_api_fuzzed_from_its_openapi_schema_answers_no_500(served_study):
    """Schemathesis generates requests from the server's own OpenAPI schema (valid and invalid), for a bounded time."""
    import schemathesis
    from hypothesis import HealthCheck, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    study, url = served_study
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    started, calls = time.monotonic(), []

    for operation in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):  # requests the schema allows, and not

            @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(operation.ok().as_strategy(mode))
            def fuzz(case):
                response = case.call(base_url=url, timeout=30)
                calls.append(response.status_code)
                assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])

            try:
                fuzz()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs (GET /)
                assert mode == GenerationMode.NEGATIVE
    assert len(calls) >= 300 and time.monotonic() - started < 60
    assert {c for c in calls if 400 <= c < 500} and {c for c in calls if c < 300}  # both kinds were sent
    assert call(url, "/api/config")[0] == 200
