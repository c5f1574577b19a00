"""What the authors' training recipe changes, measured: the regularization and the init, on the same data and seed.

    python experiments/fidelity/fidelity.py                      # toy scale: the quickstart recipe, 500 steps, CPU
    python experiments/fidelity/fidelity.py --steps 2000 --train data=folder data.root=/imagenet/train ...

Runs ``experiment=quickstart`` (the sample photos, 64 x 64 crops, batch 8) three times with one seed:
- ``authors_objective``: the loss summed over pixels / N with weight decay 1e-3 (the authors' scale, now the default);
- ``per_pixel_decay``: the regularization this project had before, a per-pixel mean loss with the same decay 1e-3,
  reproduced exactly for Adam by multiplying the decay and Adam's epsilon by h x w (16 x 16 = 256 at 64 crops):
  d_old = grad / hw + wd w is proportional to grad + hw wd w, and Adam is invariant to that factor once its
  epsilon carries it too;
- ``kmeans_init``: the authors' objective with the k-means data-dependent init (``model.init=kmeans``).
Writes ``fidelity.md`` / ``.json`` (val/ce, val/chroma_pred against val/chroma_true at each validation, train/ce)
and ``fidelity.png`` (the curves).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import run_entry_point  # noqa: E402

log = logging.getLogger("fidelity")

CROP = 64  # experiment=quickstart
TARGET_PIXELS = (CROP // 4) ** 2
RUNS = {
    "authors_objective": [],
    "per_pixel_decay": [
        f"model.optimizer.weight_decay={1e-3 * TARGET_PIXELS:g}",
        f"model.optimizer.eps={1e-8 * TARGET_PIXELS:g}",
    ],
    "kmeans_init": ["model.init=kmeans"],
}
METRICS = ("val/ce", "val/chroma_pred", "val/chroma_true", "train/ce")


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} from the CSV logger's metrics.csv."""
    series: dict[str, list[tuple[int, float]]] = {m: [] for m in METRICS}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for m in METRICS:
                if row.get(m):
                    series[m].append((int(float(row["step"])), float(row[m])))
    return series


def table(results: dict[str, dict[str, list[tuple[int, float]]]]) -> str:
    names = list(results)
    steps = sorted({s for r in results.values() for s, _ in r["val/ce"]})
    head = "| step | " + " | ".join(f"{n}: val/ce | chroma pred / true" for n in names) + " |"
    lines = [head, "|---" * (1 + 2 * len(names)) + "|"]
    for step in steps:  # every validation (trainer.val_check_interval and the end of each epoch)
        cells = []
        for n in names:
            at = lambda m, n=n, step=step: dict(results[n][m]).get(step)  # noqa: E731
            ce, pred, true = at("val/ce"), at("val/chroma_pred"), at("val/chroma_true")
            cells += [f"{ce:.3f}" if ce is not None else "-", f"{pred:.1f} / {true:.1f}" if pred is not None else "-"]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no fidelity.png")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, series in results.items():
        for ax, metric in zip(axes, ("train/ce", "val/ce", "val/chroma_pred"), strict=True):
            steps, values = zip(*series[metric], strict=True) if series[metric] else ((), ())
            ax.plot(steps, values, label=name)
            ax.set_title(metric)
            ax.set_xlabel("step")
    truth = next(iter(results.values()))["val/chroma_true"]
    if truth:
        axes[2].plot(*zip(*truth, strict=True), "k--", label="val/chroma_true")
    axes[0].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("logs/experiments/fidelity"))
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--train", nargs="*", default=[], help="extra overrides for every training run")
    args = parser.parse_args(argv)
    results = {}
    for name in args.runs:
        run_dir = args.out / name
        if not (run_dir / "csv" / "metrics.csv").is_file() or not (run_dir / "checkpoints" / "last.ckpt").is_file():
            overrides = [
                "experiment=quickstart",
                "logger=csv",
                f"trainer.max_steps={args.steps}",
                f"trainer.val_check_interval={max(1, args.steps // 10)}",
                f"hydra.run.dir={run_dir}",
                "seed=0",
                *RUNS[name],
                *args.train,
            ]
            if run_entry_point("colorization.train", overrides, run_dir.parent / f"{name}.log") != 0:
                return 1
        results[name] = read_metrics(run_dir)
    text = (
        f"# The authors' objective, the old per-pixel decay, and the k-means init ({args.steps} steps, quickstart, "
        "seed 0)\n\n" + table(results)
    )
    (args.out / "fidelity.md").write_text(text)
    (args.out / "fidelity.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "fidelity.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
