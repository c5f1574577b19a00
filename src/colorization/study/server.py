"""study serve: the page a participant opens, and the API it calls; every answer is committed to SQLite first.

A participant id (typed on the first screen, or ``?participant=ID`` in the address, kept in the browser) gets one
method for the whole session: the method with the fewest participants so far (ties: the study's order). Their
trials are written at once: the practice pairs, then ``test_trials`` test pairs drawn from the method's test pairs,
each order seeded by the study's seed and the id. A trial is ``shown`` when the page starts showing it and takes one
answer; when the participant comes back (a reload, a new tab) a trial left ``shown`` becomes ``interrupted``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from omegaconf import OmegaConf
from pydantic import BaseModel, Field

from colorization.errors import ConfigError
from colorization.study.db import connect, now, transaction

DATABASE = "answers.sqlite"


class Session(BaseModel):
    participant: str = Field(min_length=1, max_length=200)
    user_agent: str | None = None


class Show(BaseModel):
    participant: str
    trial: int


class Answer(BaseModel):
    participant: str
    trial: int
    answer: str = Field(pattern="^(left|right)$")
    answer_ms: float = Field(ge=0)
    shown_ms: float = Field(ge=0)


def load_study(study: Path) -> tuple[dict, dict]:
    """(study.yaml as a dict, manifest.json), or a one-line ConfigError."""
    if not (study / "study.yaml").is_file() or not (study / "manifest.json").is_file():
        raise ConfigError(f"study={study}: not a study directory (no study.yaml / manifest.json; run study make)")
    config = OmegaConf.to_container(OmegaConf.load(study / "study.yaml"), resolve=True)
    return config, json.loads((study / "manifest.json").read_text())


def participant_rng(seed: int, participant: str) -> np.random.Generator:
    digest = hashlib.sha256(participant.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def trial_plan(config: dict, manifest: dict, method: str, participant: str) -> list[tuple[str, dict]]:
    """The participant's trials in order: (phase, pair of the manifest)."""
    rng = participant_rng(config["seed"], participant)
    practice = manifest["practice"][method]
    test = manifest["test"][method]
    practice = [practice[i] for i in rng.permutation(len(practice))]
    test = [test[i] for i in rng.choice(len(test), size=config["protocol"]["test_trials"], replace=False)]
    return [("practice", p) for p in practice] + [("test", p) for p in test]


def create_app(study: Path) -> FastAPI:
    study = Path(study).expanduser()
    config, manifest = load_study(study)
    methods = list(config["methods"])
    pairs = {(phase, m, p["pair"]): p for phase in manifest for m in manifest[phase] for p in manifest[phase][m]}
    db = connect(study / DATABASE)
    lock = threading.Lock()  # one connection, used by one request at a time (FastAPI runs them in threads)
    app = FastAPI(title="Colorization Turing test", docs_url=None, redoc_url=None)
    page = resources.files("colorization.study").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/config")
    def protocol() -> dict:
        return config["protocol"]

    @app.post("/api/session")
    def session(body: Session) -> dict:
        """Assign (first visit) or resume (later visits); a trial still open from the last visit is interrupted."""
        with lock, transaction(db):
            row = db.execute("SELECT method FROM participants WHERE participant = ?", (body.participant,)).fetchone()
            if row is None:
                counts = dict(db.execute("SELECT method, COUNT(*) FROM participants GROUP BY method").fetchall())
                method = min(methods, key=lambda m: (counts.get(m, 0), methods.index(m)))
                db.execute(
                    "INSERT INTO participants VALUES (?, ?, ?, ?)", (body.participant, method, now(), body.user_agent)
                )
                rows = [
                    (body.participant, i, phase, method, p["pair"], p["fake_side"])
                    for i, (phase, p) in enumerate(trial_plan(config, manifest, method, body.participant))
                ]
                db.executemany(
                    "INSERT INTO trials (participant, trial, phase, method, pair, fake_side) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            else:
                method = row["method"]
                db.execute(
                    "UPDATE trials SET status = 'interrupted' WHERE participant = ? AND status = 'shown'",
                    (body.participant,),
                )
            counts = db.execute(
                "SELECT COUNT(*) AS total, SUM(status != 'pending') AS done FROM trials WHERE participant = ?",
                (body.participant,),
            ).fetchone()
        return {"participant": body.participant, "method": method, "done": counts["done"], "total": counts["total"]}

    @app.get("/api/next")
    def next_trial(participant: str) -> dict:
        """The first pending trial, with its two images (the fake on its side), or finished."""
        with lock:
            row = db.execute(
                "SELECT * FROM trials WHERE participant = ? AND status = 'pending' ORDER BY trial LIMIT 1",
                (participant,),
            ).fetchone()
            if row is None:
                known = db.execute("SELECT 1 FROM participants WHERE participant = ?", (participant,)).fetchone()
                if known is None:
                    raise HTTPException(404, "unknown participant: start a session first")
                return {"finished": True}
            done = db.execute(
                "SELECT phase, COUNT(*) FROM trials WHERE participant = ? AND status != 'pending' GROUP BY phase",
                (participant,),
            ).fetchall()
        # the addresses say nothing of which photo is real (a participant could read them in the page)
        image = f"/image/{quote(participant, safe='')}/{row['trial']}"
        return {
            "finished": False,
            "trial": row["trial"],
            "phase": row["phase"],
            "number": dict(done).get(row["phase"], 0) + 1,  # 1-based within its phase
            "left": f"{image}/left",
            "right": f"{image}/right",
        }

    @app.get("/image/{participant}/{trial}/{side}")
    def image(participant: str, trial: int, side: str) -> FileResponse:
        """One photo of the open trial: the fake on its side, the real one on the other; nothing once it is over."""
        with lock:
            row = db.execute(
                "SELECT phase, method, pair, fake_side FROM trials "
                "WHERE participant = ? AND trial = ? AND status IN ('pending', 'shown')",
                (participant, trial),
            ).fetchone()
        if row is None or side not in ("left", "right"):
            raise HTTPException(404, "no such open trial")
        pair = pairs[(row["phase"], row["method"], row["pair"])]
        path = study / "images" / (pair["fake"] if side == row["fake_side"] else pair["real"])
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/show")
    def show(body: Show) -> dict:
        """The page is about to show the pair: from now on the trial takes one answer, or becomes interrupted."""
        with lock, transaction(db):
            changed = db.execute(
                "UPDATE trials SET status = 'shown', shown_at = ? WHERE participant = ? AND trial = ? AND status = 'pending'",
                (now(), body.participant, body.trial),
            ).rowcount
        if not changed:
            raise HTTPException(409, "this trial is not the next one to show")
        return {"ok": True}

    @app.post("/api/answer")
    def answer(body: Answer) -> dict:
        """The one answer of a shown trial; the practice trials tell which side the fake was (the feedback)."""
        with lock, transaction(db):
            changed = db.execute(
                "UPDATE trials SET status = 'answered', answer = ?, answer_ms = ?, shown_ms = ?, answered_at = ? "
                "WHERE participant = ? AND trial = ? AND status = 'shown'",
                (body.answer, body.answer_ms, body.shown_ms, now(), body.participant, body.trial),
            ).rowcount
            row = db.execute(
                "SELECT phase, fake_side FROM trials WHERE participant = ? AND trial = ?",
                (body.participant, body.trial),
            ).fetchone()
        if not changed:
            raise HTTPException(409, "this trial cannot take an answer (answered already, interrupted, or not shown)")
        if row["phase"] == "practice":
            return {"feedback": True, "fake_side": row["fake_side"], "correct": body.answer == row["fake_side"]}
        return {"feedback": False}

    return app


def serve(study: Path, host: str, port: int) -> None:
    import uvicorn

    app = create_app(study)
    print(f"study page: http://{host}:{port}/  (answers in {Path(study).expanduser() / DATABASE}; Ctrl+C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
