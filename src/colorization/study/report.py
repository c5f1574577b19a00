"""study report: the fooling rate of each method (the fraction of test trials where the participant took the real
photo for the fake) with a bootstrap interval over participants, beside the paper's Table 1 column.

Practice trials and interrupted trials are left out. A participant is flagged when their median answer comes less
than ``report.fast_median_ms`` after the photos are hidden, or when ``report.same_side_fraction`` of their answers or
more pick the same side; the report is computed with everyone and again without the flagged participants.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from colorization.errors import ConfigError
from colorization.study.server import DATABASE, load_study

# PAPER.md, Table 1, AMT column ("fooled", %): only the 32 % of the full method is confirmed in the paper's text
PAPER_AMT = {
    "ground truth": (50.0, "[unverified]"),
    "random colors": (13.0, "[unverified]"),
    "Ours (L2)": (21.2, "[unverified]"),
    "Ours (L2, ft)": (23.9, "[unverified]"),
    "Ours (class)": (25.2, "[unverified]"),
    "Ours (full)": (32.3, "(confirmed in the paper's text)"),
}


@dataclass
class Participant:
    participant: str
    method: str
    trials: int  # answered test trials
    fooled: int
    median_answer_ms: float
    same_side_fraction: float  # the larger of the fractions of left and of right answers
    flags: list[str]


@dataclass
class Rate:
    method: str
    paper_row: str
    participants: int
    trials: int
    fooled: int
    rate: float  # %
    low: float  # % (the bootstrap interval)
    high: float


def test_answers(db_path: Path) -> list[sqlite3.Row]:
    """The answered test trials."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(
            "SELECT participant, method, pair, fake_side, answer, answer_ms FROM trials "
            "WHERE phase = 'test' AND status = 'answered' ORDER BY participant, trial"
        ).fetchall()
    finally:
        db.close()


def participants(rows: list, fast_median_ms: float, same_side_fraction: float) -> list[Participant]:
    by_id: dict[str, list] = {}
    for row in rows:
        by_id.setdefault(row["participant"], []).append(row)
    out = []
    for pid, answers in by_id.items():
        left = sum(a["answer"] == "left" for a in answers) / len(answers)
        median = float(np.median([a["answer_ms"] for a in answers]))
        same = max(left, 1 - left)
        flags = []
        if median < fast_median_ms:
            flags.append(f"median answer {median:.0f} ms < {fast_median_ms:g} ms")
        if same >= same_side_fraction:
            flags.append(f"{same:.0%} of answers on one side")
        fooled = sum(a["answer"] != a["fake_side"] for a in answers)
        out.append(Participant(pid, answers[0]["method"], len(answers), fooled, median, same, flags))
    return out


def bootstrap_interval(
    fooled: np.ndarray, trials: np.ndarray, samples: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the pooled rate sum(fooled) / sum(trials) over participants resampled with
    replacement (the paper's error bars); the rows of ``fooled`` / ``trials`` may be a batch of studies (..., n)."""
    n = fooled.shape[-1]
    picks = rng.integers(0, n, size=(*fooled.shape[:-1], samples, n))
    take = lambda a: np.take_along_axis(a[..., None, :], picks, axis=-1).sum(-1)  # noqa: E731
    rates = take(fooled) / take(trials)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(rates, [alpha, 1 - alpha], axis=-1)
    return low, high


def fooling_rates(people: list[Participant], methods: dict, samples: int, confidence: float, seed: int) -> list[Rate]:
    rates = []
    for method, info in methods.items():
        mine = [p for p in people if p.method == method]
        if not mine:
            rates.append(Rate(method, info["paper_row"], 0, 0, 0, math.nan, math.nan, math.nan))
            continue
        fooled = np.array([p.fooled for p in mine], dtype=float)
        trials = np.array([p.trials for p in mine], dtype=float)
        low, high = bootstrap_interval(fooled, trials, samples, confidence, np.random.default_rng(seed))
        rate = fooled.sum() / trials.sum()
        rates.append(
            Rate(
                method,
                info["paper_row"],
                len(mine),
                int(trials.sum()),
                int(fooled.sum()),
                100 * rate,
                100 * low,
                100 * high,
            )
        )
    return rates


def cell(text) -> str:
    """A Markdown table cell from a participant's text: no markup, no table breaks (ids from before the server's
    rule may hold anything)."""
    import html

    return html.escape(" ".join(str(text).split())).replace("|", "&#124;")


def finite(value):
    """JSON has no NaN or Infinity: such floats, at any depth, become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _paper_cell(row: str) -> str:
    if row not in PAPER_AMT:
        return "-"
    value, label = PAPER_AMT[row]
    return f"{value:.1f} {label}"


def _rate_cell(r: Rate) -> str:
    return "-" if r.participants == 0 else f"{r.rate:.1f} [{r.low:.1f}, {r.high:.1f}]"


def markdown(all_rates: list[Rate], kept_rates: list[Rate], people: list[Participant], cfg) -> str:
    level = f"{cfg.confidence:.0%}"
    lines = [
        "# Colorization Turing test: fooling rates",
        "",
        f"Fooling rate: % of test trials where the participant took the real photo for the fake (50 % is chance). "
        f"Intervals: {level} bootstrap over participants ({cfg.bootstrap_samples} resamples). Practice and "
        "interrupted trials are left out.",
        "",
        f"| method | paper row | participants | trials | fooled, all (%) [{level}] | fooled, unflagged (%) | paper (%) |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for a, k in zip(all_rates, kept_rates, strict=True):
        row = a.paper_row or "-"
        lines.append(
            f"| {a.method} | {row} | {a.participants} | {a.trials} | {_rate_cell(a)} | {_rate_cell(k)} | {_paper_cell(a.paper_row)} |"
        )
    flagged = [p for p in people if p.flags]
    lines += ["", f"## Flagged participants ({len(flagged)} of {len(people)})", ""]
    lines.append(
        f"Flagged: median answer under {cfg.fast_median_ms:g} ms after the photos are hidden, or "
        f"{cfg.same_side_fraction:.0%} or more answers on one side."
    )
    if flagged:
        lines += [
            "",
            "| participant | method | trials | median answer (ms) | one side | why |",
            "|---|---|---:|---:|---:|---|",
        ]
        for p in flagged:
            lines.append(
                f"| {cell(p.participant)} | {p.method} | {p.trials} | {p.median_answer_ms:.0f} | "
                f"{p.same_side_fraction:.0%} | {'; '.join(p.flags)} |"
            )
    return "\n".join(lines) + "\n"


def bar_chart(all_rates: list[Rate], kept_rates: list[Rate], path: Path, confidence: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(all_rates))
    fig, ax = plt.subplots(figsize=(1.6 * len(all_rates) + 2.5, 4.2))
    for shift, rates, label in ((-0.18, all_rates, "all participants"), (0.18, kept_rates, "unflagged")):
        values = np.array([r.rate for r in rates])
        errors = np.array([[r.rate - r.low, r.high - r.rate] for r in rates]).T
        ax.bar(x + shift, values, width=0.34, yerr=errors, capsize=4, label=f"{label} ({confidence:.0%} bootstrap)")
    paper = [PAPER_AMT.get(r.paper_row, (np.nan, ""))[0] for r in all_rates]
    ax.scatter(x, paper, marker="D", color="black", zorder=3, label="paper, Table 1 (only 32.3 confirmed)")
    ax.axhline(50, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(x, [r.method for r in all_rates])
    ax.set_ylabel("fooled (%)")
    highs = [r.high for r in [*all_rates, *kept_rates] if not math.isnan(r.high)]
    ax.set_ylim(0, max([65.0, *(h + 5 for h in highs)]))
    ax.set_title("Colorization Turing test")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(study: Path, cfg, seed: int, out: Path | None = None) -> dict:
    """Write report.md, report.json and fooling_rates.png under out (default: study/report); returns the JSON."""
    study = Path(study).expanduser()
    config, _ = load_study(study)
    if not (study / DATABASE).is_file():
        raise ConfigError(f"study={study}: no answers yet ({DATABASE}; run study serve)")
    if not 0 < cfg.confidence < 1 or cfg.bootstrap_samples < 1:
        raise ConfigError("report.confidence must be in (0, 1) and report.bootstrap_samples >= 1")
    if cfg.fast_median_ms < 0 or not 0.5 < cfg.same_side_fraction <= 1:
        raise ConfigError("report.fast_median_ms must be >= 0 and report.same_side_fraction in (0.5, 1]")
    people = participants(test_answers(study / DATABASE), cfg.fast_median_ms, cfg.same_side_fraction)
    methods = config["methods"]
    all_rates = fooling_rates(people, methods, cfg.bootstrap_samples, cfg.confidence, seed)
    kept = [p for p in people if not p.flags]
    kept_rates = fooling_rates(kept, methods, cfg.bootstrap_samples, cfg.confidence, seed)
    out = Path(out).expanduser() if out else study / "report"
    out.mkdir(parents=True, exist_ok=True)
    result = finite(
        {
            "confidence": cfg.confidence,
            "bootstrap_samples": cfg.bootstrap_samples,
            "all": [asdict(r) for r in all_rates],
            "unflagged": [asdict(r) for r in kept_rates],
            "paper": {r.method: PAPER_AMT.get(r.paper_row, (None, ""))[0] for r in all_rates},
            "participants": [asdict(p) for p in people],
        }
    )
    (out / "report.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(all_rates, kept_rates, people, cfg))
    bar_chart(all_rates, kept_rates, out / "fooling_rates.png", cfg.confidence)
    return result
