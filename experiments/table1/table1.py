"""Table 1 of the paper: the loss variants and the baselines, the paper's numbers beside ours.

    python experiments/table1/table1.py                      # toy scale: the sample photos, CPU, minutes
    python experiments/table1/table1.py --scale full --train data.root=/imagenet/train data.val_root=/imagenet/val

1. trains "Ours (L2)", "Ours (class)" and "Ours (full)" as one multirun (loss=l2,unbalanced,rebalanced),
   then "Ours (L2, ft)": the L2 loss started from the full classification network (model.init_from);
2. evaluates each checkpoint with ``python -m colorization.evaluate`` (metrics.json: the model and the
   gray / random / ground-truth baselines);
3. writes <out>/table1.md (and table1.json): the paper's Table 1 layout, paper and measured side by side.

A step whose output already exists is not run again: re-running the command continues an interrupted recipe.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import find_value, forms, numeric_leaves, read_json, run_entry_point, write_report  # noqa: E402

log = logging.getLogger("table1")

# The paper's Table 1 (10k ImageNet val): AuC, rebalanced AuC, VGG top-1 (%), AMT fooled (%).
# Each cell is (value, source): "paper" = confirmed in the paper's text, "definition" = true by construction,
# "unverified" = a commonly quoted figure not checked against the paper's own table (see docs/PAPER.md).
PAPER_TABLE1: dict[str, dict[str, tuple[float | None, str]]] = {
    "ground_truth": {
        "auc": (100, "definition"),
        "auc_rebalanced": (100, "definition"),
        "vgg_top1": (68.3, "paper"),
        "amt": (50, "definition"),
    },
    "gray": {
        "auc": (89.1, "unverified"),
        "auc_rebalanced": (58.0, "unverified"),
        "vgg_top1": (52.7, "paper"),
        "amt": (None, ""),
    },
    "random": {
        "auc": (84.2, "unverified"),
        "auc_rebalanced": (57.3, "unverified"),
        "vgg_top1": (41.0, "unverified"),
        "amt": (13.0, "unverified"),
    },
    "l2": {
        "auc": (91.2, "unverified"),
        "auc_rebalanced": (64.4, "unverified"),
        "vgg_top1": (54.9, "unverified"),
        "amt": (21.2, "unverified"),
    },
    "l2_ft": {
        "auc": (91.5, "unverified"),
        "auc_rebalanced": (66.2, "unverified"),
        "vgg_top1": (56.5, "unverified"),
        "amt": (23.9, "unverified"),
    },
    "class": {
        "auc": (91.6, "unverified"),
        "auc_rebalanced": (65.1, "unverified"),
        "vgg_top1": (56.6, "unverified"),
        "amt": (25.2, "unverified"),
    },
    "full": {
        "auc": (89.5, "unverified"),
        "auc_rebalanced": (67.3, "unverified"),
        "vgg_top1": (56.0, "paper"),
        "amt": (32.3, "paper"),
    },
}

ROWS = {  # table row -> label, in the paper's order
    "ground_truth": "Ground truth",
    "gray": "Gray",
    "random": "Random colors",
    "l2": "Ours (L2)",
    "l2_ft": "Ours (L2, ft)",
    "class": "Ours (class)",
    "full": "Ours (full)",
}
# our training runs -> table rows
VARIANT_ROWS = {"l2": "l2", "l2_ft": "l2_ft", "unbalanced": "class", "rebalanced": "full"}
BASELINES = {"ground_truth": ("ground_truth", "groundtruth", "gt", "truth"), "gray": ("gray", "grey", "grayscale"),
             "random": ("random", "random_colors", "random_color")}  # fmt: skip
MODEL_NAMES = ("model", "ours", "ckpt", "checkpoint", "colorization", "prediction")

PERCENT_METRICS = ("auc", "auc_rebalanced", "vgg_top1")
METRIC_NAMES = {  # our column -> the names metrics.json may use
    "auc": ("auc", "auc_raw", "auc_non_rebalanced", "auc_nonrebal"),
    "auc_rebalanced": ("auc_rebalanced", "auc_rebal", "rebalanced_auc", "auc_rb"),
    "vgg_top1": ("vgg_top1", "vgg_top_1", "vgg_acc1", "vgg_accuracy"),
    "colorfulness": ("colorfulness",),
    "psnr": ("psnr",),
    "ssim": ("ssim",),
}


def _aliases(names: Sequence[str]) -> set[str]:
    return set().union(*(forms(n) for n in names))


def metrics_rows(metrics: object) -> dict[str, dict[str, float]]:
    """A metrics.json of ``colorization.evaluate`` -> {"model" | "gray" | "random" | "ground_truth": {metric: value}},
    AuC and top-1 in percent. Read defensively: any nesting, fractions or percents (a file whose AuCs are all
    <= 1 holds fractions: ground truth scores 100 %)."""
    leaves = list(numeric_leaves(metrics))
    rows = {**{row: names for row, names in BASELINES.items()}, "model": MODEL_NAMES}
    baselines = _aliases([n for names in BASELINES.values() for n in names])
    out: dict[str, dict[str, float]] = {}
    for row, names in rows.items():
        exclude = baselines if row == "model" else set()
        values = {}
        for metric, metric_names in METRIC_NAMES.items():
            value = find_value(leaves, [_aliases(names)], _aliases(metric_names), exclude)
            if value is not None:
                values[metric] = value
        if values:
            out[row] = values
    aucs = [v[m] for v in out.values() for m in ("auc", "auc_rebalanced") if m in v]
    if aucs and max(aucs) <= 1.0:
        for values in out.values():
            for metric in PERCENT_METRICS:
                if metric in values:
                    values[metric] *= 100
    return out


def measured_rows(evaluations: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """{variant (l2, l2_ft, unbalanced, rebalanced): metrics.json content or None} -> {table row: metrics}.
    The baselines come from the first evaluation that has them (rebalanced first)."""
    measured: dict[str, dict[str, float]] = {}
    order = sorted(evaluations, key=lambda v: ["rebalanced", "unbalanced", "l2", "l2_ft"].index(v))
    for variant in order:
        if evaluations[variant] is None:
            continue
        rows = metrics_rows(evaluations[variant])
        if "model" in rows:
            measured[VARIANT_ROWS[variant]] = rows["model"]
        for baseline in BASELINES:
            if baseline in rows and baseline not in measured:
                measured[baseline] = rows[baseline]
    return measured


def _paper_cell(cell: tuple[float | None, str]) -> str:
    value, source = cell
    if value is None:
        return "–"
    text = f"{value:g}" if source == "definition" else f"{value:.1f}"  # as printed in the paper
    return text + ("*" if source == "unverified" else "")


def _measured_cell(values: Mapping[str, float] | None, metric: str, digits: int = 1) -> str:
    if not values or metric not in values:
        return "–"
    return f"{values[metric]:.{digits}f}"


def render_table1(
    measured: Mapping[str, Mapping[str, float]],
    paper: Mapping[str, Mapping[str, tuple[float | None, str]]] = PAPER_TABLE1,
    notes: Sequence[str] = (),
) -> str:
    """The paper's Table 1 as Markdown, paper and measured (``measured[row][metric]``, percents) side by side,
    then the measured-only metrics (colorfulness, PSNR, SSIM), then the notes."""
    lines = [
        "| Method | AuC (paper) | AuC (ours) | AuC rebal. (paper) | AuC rebal. (ours) "
        "| VGG top-1 (paper) | VGG top-1 (ours) | AMT fooled (paper) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row, label in ROWS.items():
        p, m = paper.get(row, {}), measured.get(row)
        cells = [label]
        for metric in PERCENT_METRICS:
            cells += [_paper_cell(p.get(metric, (None, ""))), _measured_cell(m, metric)]
        cells.append(_paper_cell(p.get("amt", (None, ""))))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "All numbers in %. Paper: Zhang, Isola & Efros (ECCV 2016), Table 1, 10k ImageNet val images; "
        "* = commonly quoted, not checked against the paper's own table. "
        "AMT (people fooled by the colorization) cannot be measured here.",
    ]
    extra = [(row, label) for row, label in ROWS.items() if any(k in (measured.get(row) or {}) for k in ("colorfulness", "psnr", "ssim"))]  # fmt: skip
    if extra:
        lines += ["", "| Method | colorfulness | PSNR (dB) | SSIM |", "|---|---:|---:|---:|"]
        for row, label in extra:
            m = measured[row]
            cells = [_measured_cell(m, "colorfulness"), _measured_cell(m, "psnr", 2), _measured_cell(m, "ssim", 3)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# ---- the recipe -------------------------------------------------------------------------------------
SCALES = {
    # the sample photos on a CPU: quickstart's 64 x 64 crops, 60 steps per variant
    "toy": {"train": ["experiment=quickstart"], "eval": []},
    # the authors' released setup (ImageNet: add data.root=... data.val_root=...)
    "full": {"train": ["experiment=authors"], "eval": []},
}


# where each variant trains under --out: the sweep's jobs, and the fine-tuning run outside the sweep directory
RUN_DIRS = {
    "l2": "train/l2",
    "unbalanced": "train/unbalanced",
    "rebalanced": "train/rebalanced",
    "l2_ft": "finetune/l2_ft",
}


def _checkpoint(out: Path, variant: str) -> Path:
    return out / RUN_DIRS[variant] / "checkpoints" / "last.ckpt"


def train_variants(out: Path, train_args: Sequence[str], ft_from: str) -> list[str]:
    """Train the variants that have no checkpoint yet; returns notes about the ones that failed."""
    notes = []
    missing = [v for v in ("l2", "unbalanced", "rebalanced") if not _checkpoint(out, v).is_file()]
    if missing:
        run_entry_point(
            "colorization.train",
            ["-m", *train_args, f"loss={','.join(missing)}", f"hydra.sweep.dir={out / 'train'}",
             "hydra.sweep.subdir=${loss.name}"],
            out / "logs" / "train.log",
        )  # fmt: skip
    source = _checkpoint(out, ft_from)
    if not _checkpoint(out, "l2_ft").is_file() and source.is_file():
        run_entry_point(
            "colorization.train",
            [*train_args, "loss=l2", f"model.init_from={source}", f"hydra.run.dir={out / RUN_DIRS['l2_ft']}"],
            out / "logs" / "train_l2_ft.log",
        )
    for variant, row in VARIANT_ROWS.items():
        if not _checkpoint(out, variant).is_file():
            notes.append(f"{ROWS[row]}: no checkpoint (training failed or skipped: see {out / 'logs'})")
    return notes


def evaluate_variants(out: Path, eval_args: Sequence[str]) -> dict[str, object]:
    evaluations: dict[str, object] = {}
    for variant in VARIANT_ROWS:
        ckpt, run_dir = _checkpoint(out, variant), out / "eval" / variant
        if not ckpt.is_file():
            continue
        if not (run_dir / "metrics.json").is_file():
            args = [f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}", *eval_args]
            run_entry_point("colorization.evaluate", args, out / "logs" / f"eval_{variant}.log")
        evaluations[variant] = read_json(run_dir / "metrics.json")
    return evaluations


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="toy")
    parser.add_argument("--out", type=Path, help="default: logs/experiments/table1/<scale>")
    parser.add_argument("--ft-from", choices=["rebalanced", "unbalanced"], default="rebalanced",
                        help='the classification network "L2, ft" starts from')  # fmt: skip
    parser.add_argument("--train", nargs="*", default=[], help="more overrides for colorization.train")
    parser.add_argument("--eval", nargs="*", default=[], help="more overrides for colorization.evaluate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    out = (args.out or Path("logs/experiments/table1") / args.scale).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = SCALES[args.scale]
    notes = train_variants(out, [*scale["train"], *args.train], args.ft_from)
    evaluations = evaluate_variants(out, [*scale["eval"], *args.eval])
    notes += [f"{ROWS[VARIANT_ROWS[v]]}: evaluation gave no metrics.json" for v, e in evaluations.items() if e is None]
    measured = measured_rows(evaluations)
    table = render_table1(measured, notes=notes)
    return write_report(out, "table1", table, measured, notes)


if __name__ == "__main__":
    main()
