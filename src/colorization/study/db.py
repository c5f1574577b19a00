"""The answers, in SQLite (WAL mode): every change is one transaction, so a crash or a restart loses nothing.

participants: one row per participant id, with the one method of their session.
trials: one row per trial of a participant, written when the participant is assigned (status ``pending``), then
``shown`` when the page starts showing the pair, then ``answered`` (with the answer) or ``interrupted`` (the page
went away while the trial was open: a reload, a closed tab; its pair is never shown again).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    participant TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    created_at REAL NOT NULL,
    user_agent TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    participant TEXT NOT NULL REFERENCES participants(participant),
    trial INTEGER NOT NULL,          -- 0, 1, ... in the order the participant sees them
    phase TEXT NOT NULL CHECK (phase IN ('practice', 'test')),
    method TEXT NOT NULL,
    pair TEXT NOT NULL,
    fake_side TEXT NOT NULL CHECK (fake_side IN ('left', 'right')),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'shown', 'answered', 'interrupted')),
    answer TEXT CHECK (answer IN ('left', 'right')),   -- the side the participant took for the fake
    answer_ms REAL,                  -- from the images being hidden to the answer
    shown_ms REAL,                   -- how long the page actually showed both images
    shown_at REAL,                   -- server time (s since the epoch)
    answered_at REAL,
    PRIMARY KEY (participant, trial)
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit (``transaction``)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a committed answer survives a power cut, not only a process crash
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA)
    return db


@contextmanager
def transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: takes the write lock at once, so two requests of the
    same participant cannot both read a trial as open and both answer it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def now() -> float:
    return time.time()
