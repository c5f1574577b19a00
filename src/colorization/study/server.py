"""study serve: the page a participant opens, and the API it calls; every answer is committed to SQLite first.

A participant id (typed on the first screen, or ``?participant=ID`` in the address, kept in the browser) gets one
method for the whole session: the method with the fewest participants so far (ties: the study's order). Their
trials are written at once: the practice pairs, then ``test_trials`` test pairs drawn from the method's test pairs,
each order seeded by the study's seed and the id. A trial is ``shown`` when the page starts showing it and takes one
answer; when the participant comes back (a reload, a new tab) a trial left ``shown`` becomes ``interrupted``.

Participants are strangers, so the server enforces the protocol, not the page: only the next trial can be shown,
only while no other is open; its photos are served only while it is shown (and for ``IMAGE_WINDOW_S`` after);
ids are letters, digits, ``-`` and ``_``; every string, number and body is bounded (413 beyond ``MAX_BODY_BYTES``);
every bad request is a 4xx.
"""

from __future__ import annotations

import hashlib
import json
import threading
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field

from colorization.errors import ConfigError
from colorization.study.db import connect, now, transaction

DATABASE = "answers.sqlite"
PARTICIPANT = r"^[A-Za-z0-9_-]{1,64}$"  # also what a crowdsourcing platform's worker ids look like
MAX_TRIAL = 10_000
MAX_MS = 24 * 3600 * 1000.0  # a day: an answer or a display time beyond it is not a measurement
MAX_BODY_BYTES = 16 * 1024
IMAGE_WINDOW_S = 60.0  # a shown trial's photos can be fetched this long after it was shown (a slow connection)

Participant = Field(pattern=PARTICIPANT, description="letters, digits, - and _ (1 to 64)")
Trial = Field(ge=0, le=MAX_TRIAL)
Milliseconds = Field(ge=0, le=MAX_MS, allow_inf_nan=False)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Session(Request):
    participant: str = Participant
    user_agent: str | None = Field(default=None, max_length=512)


class Show(Request):
    participant: str = Participant
    trial: int = Trial


class Answer(Request):
    participant: str = Participant
    trial: int = Trial
    answer: str = Field(pattern="^(left|right)$")
    answer_ms: float = Milliseconds
    shown_ms: float = Milliseconds


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app sees it (uvicorn sets no limit).
    Bodies are counted as they stream (a chunked request has no Content-Length), then handed on whole."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self.too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self.too_large(send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def too_large(self, send) -> None:
        text = f"request body over {self.limit} bytes".encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": text})


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
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError) -> JSONResponse:
        """422 without echoing the input (FastAPI's own answer put an Infinity in its JSON: a 500)."""
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

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
    def next_trial(participant: str = Query(pattern=PARTICIPANT)) -> dict:
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
    def image(
        participant: str = PathParam(pattern=PARTICIPANT),
        trial: int = PathParam(ge=0, le=MAX_TRIAL),
        side: str = PathParam(pattern="^(left|right)$"),
    ) -> FileResponse:
        """One photo of the shown trial (the fake on its side, the real one on the other), for IMAGE_WINDOW_S after it
        was shown; nothing of a trial not yet shown, answered or interrupted."""
        with lock:
            row = db.execute(
                "SELECT phase, method, pair, fake_side FROM trials "
                "WHERE participant = ? AND trial = ? AND status = 'shown' AND shown_at > ?",
                (participant, trial, now() - IMAGE_WINDOW_S),
            ).fetchone()
        if row is None:
            raise HTTPException(404, "no such shown trial")
        pair = pairs[(row["phase"], row["method"], row["pair"])]
        path = study / "images" / (pair["fake"] if side == row["fake_side"] else pair["real"])
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/show")
    def show(body: Show) -> dict:
        """The page is about to load and show the pair: from now on the trial takes one answer, or becomes
        interrupted. Only the next pending trial, and only while no other trial is open."""
        with lock, transaction(db):
            state = db.execute(
                "SELECT MIN(CASE WHEN status = 'pending' THEN trial END) AS next, "
                "SUM(status = 'shown') AS open FROM trials WHERE participant = ?",
                (body.participant,),
            ).fetchone()
            changed = 0
            if state["next"] == body.trial and not state["open"]:
                changed = db.execute(
                    "UPDATE trials SET status = 'shown', shown_at = ? WHERE participant = ? AND trial = ?",
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
        if not changed or row is None:
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
