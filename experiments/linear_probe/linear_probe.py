"""Self-supervised representation learning: the AlexNet colorization network, frozen, probed layer by layer.

    python experiments/linear_probe/linear_probe.py                  # toy scale: the sample photos, CPU
    python experiments/linear_probe/linear_probe.py --scale full --train data.root=/imagenet/train \\
        data.val_root=/imagenet/val --probe data.root=/imagenet/train data.val_root=/imagenet/val

1. trains the AlexNet variant on the colorization task (``experiment=alexnet_rebalanced``, no labels);
2. probes it with ``python -m colorization.probe`` (probe.json: top-1 / top-5 of a linear classifier on each
   layer conv1..conv5, pool5, for the checkpoint and a randomly initialized network);
3. writes <out>/linear_probe.md (and .json): measured beside the paper's numbers.

A step whose output already exists is not run again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import find_value, forms, numeric_leaves, read_json, run_entry_point, write_report  # noqa: E402

from colorization.data.sources import write_labeled_samples  # noqa: E402

log = logging.getLogger("linear_probe")

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")
# ImageNet top-1 (%) of linear classifiers on frozen features; all [unverified] in docs/PAPER.md.
PAPER_COLORIZATION = {"conv1": 12.5, "conv2": 24.5, "conv3": 30.4, "conv4": 31.5, "conv5": 30.3}
PAPER_SUPERVISED = {"conv1": 19.3, "conv2": 36.3, "conv3": 44.2, "conv4": 48.3, "conv5": 50.5}

RANDOM_NAMES = ("random", "random_init", "random_baseline", "baseline", "untrained")
TOP1_NAMES = ("top1", "top_1", "acc1", "acc_1", "accuracy_top1", "top1_accuracy")
TOP5_NAMES = ("top5", "top_5", "acc5", "acc_5", "accuracy_top5", "top5_accuracy")


def _aliases(names: Sequence[str]) -> set[str]:
    return set().union(*(forms(n) for n in names))


def probe_rows(probe: object) -> dict[str, dict[str, dict[str, float]]]:
    """A probe.json of ``colorization.probe`` -> {"model" | "random": {layer: {"top1", "top5"}}} in percent.
    Read defensively: any nesting; the random baseline is whatever is named random / baseline; a file whose
    accuracies are all <= 1 holds fractions."""
    leaves = list(numeric_leaves(probe))
    random = _aliases(RANDOM_NAMES)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in ("model", "random"):
        for layer in LAYERS:
            for metric, names in (("top1", TOP1_NAMES), ("top5", TOP5_NAMES)):
                required = [forms(layer)] + ([random] if row == "random" else [])
                value = find_value(leaves, required, _aliases(names), exclude=set() if row == "random" else random)
                if value is not None:
                    out.setdefault(row, {}).setdefault(layer, {})[metric] = value
    values = [v for layers in out.values() for m in layers.values() for v in m.values()]
    if values and max(values) <= 1.0:
        for layers in out.values():
            for metrics in layers.values():
                for metric in metrics:
                    metrics[metric] *= 100
    return out


def _cell(value: float | None, digits: int = 1, mark: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{mark}"


def render_probe_table(measured: Mapping[str, Mapping[str, Mapping[str, float]]], notes: Sequence[str] = ()) -> str:
    """Markdown: one row per layer; the paper's colorization and supervised AlexNet top-1 beside ours and a
    random network's (top-1, top-5), all in %."""
    model, random = measured.get("model", {}), measured.get("random", {})
    lines = [
        "| Layer | colorization (paper) | supervised (paper) | ours top-1 | ours top-5 | random top-1 | random top-5 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for layer in LAYERS:
        m, r = model.get(layer, {}), random.get(layer, {})
        cells = [
            _cell(PAPER_COLORIZATION.get(layer), mark="*"),
            _cell(PAPER_SUPERVISED.get(layer), mark="*"),
            _cell(m.get("top1")),
            _cell(m.get("top5")),
            _cell(r.get("top1")),
            _cell(r.get("top5")),
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ImageNet classification accuracy (%) of a linear classifier on each frozen layer. Paper: Zhang, Isola & "
        "Efros (ECCV 2016), AlexNet trained on colorization vs on ImageNet labels; * = commonly quoted, not "
        "checked against the paper's own table. Ours: the data and protocol of the run below.",
    ]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# ---- the recipe -------------------------------------------------------------------------------------
# toy: the probe's labeled data is made from the sample photos (one class per photo, 96 x 96 crops)
TOY_PROBE = ["trainer.accelerator=cpu", "trainer.max_epochs=5", "data.crop_size=96", "data.resize=null"]
TOY_PROBE += ["data.batch_size=16", "data.num_workers=1"]
SCALES = {
    "toy": {"train": ["trainer.accelerator=cpu", "trainer.max_steps=60", "data.num_workers=1"], "probe": TOY_PROBE},
    "full": {"train": ["data=folder"], "probe": []},
}


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="toy")
    parser.add_argument("--out", type=Path, help="default: logs/experiments/linear_probe/<scale>")
    parser.add_argument("--experiment", default="alexnet_rebalanced", help="the training preset")
    parser.add_argument("--train", nargs="*", default=[], help="more overrides for colorization.train")
    parser.add_argument("--probe", nargs="*", default=[], help="more overrides for colorization.probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    out = (args.out or Path("logs/experiments/linear_probe") / args.scale).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale, notes = SCALES[args.scale], []
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        train = [f"experiment={args.experiment}", *scale["train"], *args.train, f"hydra.run.dir={out / 'train'}"]
        run_entry_point("colorization.train", train, out / "logs" / "train.log")
    probe = None
    if ckpt.is_file():
        if not (out / "probe" / "probe.json").is_file():
            args_probe = [f"ckpt_path={ckpt}", f"hydra.run.dir={out / 'probe'}", *scale["probe"], *args.probe]
            if args.scale == "toy":
                labeled = write_labeled_samples(out / "labeled")
                args_probe[2:2] = [f"data.root={labeled / 'train'}", f"data.val_root={labeled / 'val'}"]
            run_entry_point("colorization.probe", args_probe, out / "logs" / "probe.log")
        probe = read_json(out / "probe" / "probe.json")
        if probe is None:
            notes.append(f"the probe gave no probe.json (see {out / 'logs' / 'probe.log'})")
    else:
        notes.append(f"training gave no checkpoint (see {out / 'logs' / 'train.log'})")
    measured = probe_rows(probe) if probe is not None else {}
    table = render_probe_table(measured, notes)
    return write_report(out, "linear_probe", table, measured, notes)


if __name__ == "__main__":
    main()
