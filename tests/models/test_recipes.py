"""The experiments/ recipes: Table 1 and the linear-probe table rendered from synthetic metrics, the JSON
outputs of evaluate / probe read whatever their nesting, "L2, ft" initialization, and the toy scale end to end
(once colorization.evaluate / colorization.probe exist)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from colorization.color import ab_bins
from colorization.errors import ConfigError
from colorization.models import ColorizationModule
from colorization.models.init_from import head_name, load_body_weights
from helpers.config import REPO, TINY


def _load(name: str):
    path = REPO / "experiments" / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


table1 = _load("table1")
linear_probe = _load("linear_probe")


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """First Markdown table: row label -> its cells."""
    rows = {}
    for line in markdown.split("\n\n")[0].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


# ---- Table 1 ----------------------------------------------------------------------------------------
def test_table1_has_the_papers_rows_and_numbers_beside_the_measured_ones():
    measured = {
        "ground_truth": {"auc": 100.0, "auc_rebalanced": 100.0},
        "gray": {"auc": 88.04, "auc_rebalanced": 55.55, "vgg_top1": 12.0},
        "full": {"auc": 90.123, "auc_rebalanced": 66.66},
    }
    rows = _table_rows(table1.render_table1(measured))
    assert list(rows) == [
        "Ground truth",
        "Gray",
        "Random colors",
        "Ours (L2)",
        "Ours (L2, ft)",
        "Ours (class)",
        "Ours (full)",
    ]
    # columns: AuC paper, ours, AuC rebal paper, ours, VGG paper, ours, AMT paper
    assert rows["Gray"] == ["89.1*", "88.0", "58.0*", "55.5", "52.7", "12.0", "–"]
    assert rows["Ours (full)"] == ["89.5*", "90.1", "67.3*", "66.7", "56.0", "–", "32.3"]
    assert rows["Ours (L2, ft)"] == ["91.5*", "–", "66.2*", "–", "56.5*", "–", "23.9*"]
    assert rows["Ground truth"] == ["100", "100.0", "100", "100.0", "68.3", "–", "50"]
    assert rows["Random colors"][-1] == "13.0*"


def test_table1_lists_measured_only_metrics_and_notes():
    measured = {"l2": {"auc": 91.0, "colorfulness": 12.345, "psnr": 23.456, "ssim": 0.9123}}
    text = table1.render_table1(measured, notes=["Ours (class): no checkpoint"])
    assert "| Ours (L2) | 12.3 | 23.46 | 0.912 |" in text
    assert text.rstrip().endswith("- Ours (class): no checkpoint")
    assert "| Gray | " not in text.split("colorfulness")[1], "rows without measured-only metrics are left out"


@pytest.mark.parametrize(
    "metrics",
    [
        # flat rows, fractions
        {
            "model": {"auc": 0.9, "auc_rebalanced": 0.6, "colorfulness": 20.0, "psnr": 22.0, "ssim": 0.9},
            "gray": {"auc": 0.88, "auc_rebalanced": 0.55},
            "random": {"auc": 0.8, "auc_rebalanced": 0.5},
            "ground_truth": {"auc": 1.0, "auc_rebalanced": 1.0},
        },
        # nested under "rows", percents, other spellings
        {
            "rows": {
                "model": {"AuC": 90.0, "AuC-rebal": 60.0, "colorfulness": 20.0, "PSNR": 22.0, "SSIM": 0.9},
                "Gray": {"auc": 88.0, "auc_rebal": 55.0},
                "random colors": {"auc": 80.0, "auc_rebal": 50.0},
                "Ground truth": {"auc": 100.0, "auc_rebal": 100.0},
            },
            "n_images": 8,
        },
        # values with their spread
        {
            "metrics": {
                "model": {
                    "auc": {"value": 0.9, "std": 0.01},
                    "auc_rebalanced": {"mean": 0.6, "std": 0.02},
                    "colorfulness": 20.0,
                    "psnr": 22.0,
                    "ssim": 0.9,
                },
                "gray": {"auc": {"value": 0.88}, "auc_rebalanced": 0.55},
                "random": {"auc": 0.8, "auc_rebalanced": 0.5},
                "ground_truth": {"auc": 1.0, "auc_rebalanced": 1.0},
            }
        },
        # a list of records
        {
            "rows": [
                {"name": "model", "auc": 0.9, "auc_rebalanced": 0.6, "colorfulness": 20.0, "psnr": 22.0, "ssim": 0.9},
                {"name": "gray", "auc": 0.88, "auc_rebalanced": 0.55},
                {"name": "random", "auc": 0.8, "auc_rebalanced": 0.5},
                {"name": "ground_truth", "auc": 1.0, "auc_rebalanced": 1.0},
            ]
        },
    ],
)
def test_metrics_json_is_read_whatever_its_layout(metrics):
    rows = table1.metrics_rows(metrics)
    assert rows["model"] == pytest.approx(
        {"auc": 90.0, "auc_rebalanced": 60.0, "colorfulness": 20.0, "psnr": 22.0, "ssim": 0.9}
    )
    assert rows["gray"] == pytest.approx({"auc": 88.0, "auc_rebalanced": 55.0})
    assert rows["random"] == pytest.approx({"auc": 80.0, "auc_rebalanced": 50.0})
    assert rows["ground_truth"] == pytest.approx({"auc": 100.0, "auc_rebalanced": 100.0})


def test_measured_rows_map_variants_to_the_papers_rows():
    def evaluation(auc):
        return {"model": {"auc": auc}, "gray": {"auc": 0.5}, "ground_truth": {"auc": 1.0}}

    evaluations = {"l2": evaluation(0.7), "unbalanced": evaluation(0.8), "rebalanced": evaluation(0.9), "l2_ft": None}
    measured = table1.measured_rows(evaluations)
    assert {row: m["auc"] for row, m in measured.items()} == pytest.approx(
        {"l2": 70.0, "class": 80.0, "full": 90.0, "gray": 50.0, "ground_truth": 100.0}
    )


def test_paper_numbers_match_docs_paper_md():
    """The numbers written into the recipe are PAPER.md's table, and its verified cells are PAPER.md's."""
    candidates = [root / "shared" / "docs" / "PAPER.md" for root in (REPO.parent, REPO.parent.parent)]
    paper_md = next((p for p in candidates if p.is_file()), None)
    if paper_md is None:
        pytest.skip("../shared/docs/PAPER.md is not present")
    lines = [line for line in paper_md.read_text().splitlines() if line.startswith("| ") and "|---" not in line]
    labels = {
        "ground truth": "ground_truth",
        "gray": "gray",
        "random colors": "random",
        "Ours (L2)": "l2",
        "Ours (L2, ft)": "l2_ft",
        "Ours (class)": "class",
        "Ours (full)": "full",
    }
    seen = 0
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in labels and len(cells) == 5:
            paper = table1.PAPER_TABLE1[labels[cells[0]]]
            for metric, cell in zip(("auc", "auc_rebalanced", "vgg_top1", "amt"), cells[1:], strict=True):
                expected = None if cell == "-" else float(cell)
                assert paper[metric][0] == expected, (cells[0], metric)
            seen += 1
    assert seen == 7
    confirmed = {
        (row, m) for row, cells in table1.PAPER_TABLE1.items() for m, (_, src) in cells.items() if src == "paper"
    }
    assert confirmed == {("ground_truth", "vgg_top1"), ("gray", "vgg_top1"), ("full", "vgg_top1"), ("full", "amt")}


# ---- linear probe -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "probe",
    [
        {
            "checkpoint": {f"conv{i}": {"top1": i / 100, "top5": i / 50} for i in range(1, 6)}
            | {"pool5": {"top1": 0.06, "top5": 0.12}},
            "random": {f"conv{i}": {"top1": 0.01, "top5": 0.05} for i in range(1, 6)}
            | {"pool5": {"top1": 0.01, "top5": 0.05}},
        },
        {
            "layers": [
                {"layer": layer, "model": {"top-1": t1, "top-5": t1 * 2}, "random_init": {"top-1": 1.0, "top-5": 5.0}}
                for layer, t1 in zip(
                    ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5"), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0), strict=True
                )
            ]
        },
    ],
)
def test_probe_json_is_read_whatever_its_layout(probe):
    rows = linear_probe.probe_rows(probe)
    assert {layer: m["top1"] for layer, m in rows["model"].items()} == pytest.approx(
        {"conv1": 1.0, "conv2": 2.0, "conv3": 3.0, "conv4": 4.0, "conv5": 5.0, "pool5": 6.0}
    )
    assert rows["model"]["conv3"]["top5"] == pytest.approx(6.0)
    assert [m["top1"] for m in rows["random"].values()] == pytest.approx([1.0] * 6)
    assert [m["top5"] for m in rows["random"].values()] == pytest.approx([5.0] * 6)


def test_probe_table_puts_the_papers_numbers_beside_ours():
    measured = {"model": {"conv2": {"top1": 20.04, "top5": 40.0}}, "random": {"conv2": {"top1": 3.0}}}
    rows = _table_rows(linear_probe.render_probe_table(measured))
    assert list(rows) == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool5"]
    assert rows["conv2"] == ["24.5*", "36.3*", "20.0", "40.0", "3.0", "–"]
    assert rows["pool5"] == ["–"] * 6
    assert rows["conv5"][:2] == ["30.3*", "50.5*"]


# ---- "L2, ft": the L2 network started from the classification network --------------------------------
def _module(variant: str, seed: int) -> ColorizationModule:
    torch.manual_seed(seed)
    return ColorizationModule(loss={"name": variant}, bins=ab_bins("srgb"))


def test_init_from_copies_the_body_and_keeps_the_new_head(tmp_path):
    source = _module("rebalanced", seed=1)
    ckpt = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    target = _module("l2", seed=2)
    head_before = target.net.model8[6].weight.clone()
    loaded = load_body_weights(target, ckpt)
    assert head_name(target.net) == "model8.6"
    assert len(loaded) == len(target.net.state_dict()) - 2  # all but the head's weight and bias
    for key, value in target.net.state_dict().items():
        if key.startswith("model8.6."):
            continue
        assert torch.equal(value, source.net.state_dict()[key]), key
    assert torch.equal(target.net.model8[6].weight, head_before), "the head keeps its own initialization"
    assert target.net.model8[6].weight.shape != source.net.model8[6].weight.shape  # 2 vs Q outputs


def test_init_from_refuses_another_network_naming_the_key(tmp_path):
    state = _module("rebalanced", seed=1).state_dict()
    state["net.model1.0.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="model.init_from"):
        load_body_weights(_module("l2", seed=2), tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="model.init_from"):
        load_body_weights(_module("l2", seed=2), tmp_path / "missing.ckpt")


# ---- the recipes end to end at toy scale (after the merge of colorization.evaluate / .probe) ---------------
TOY_TRAIN = [*TINY[1:], "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=csv"]


@pytest.mark.slow
def test_table1_trains_the_variants_and_fine_tunes_l2_from_the_full_network(tmp_path, monkeypatch):
    """The recipe's training half (no evaluate needed): one multirun for three variants, then "L2, ft"."""
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    notes = table1.train_variants(tmp_path, ["experiment=quickstart", *TOY_TRAIN], "rebalanced")
    assert notes == []
    assert [r["status"] for r in json.loads((tmp_path / "train" / "summary.json").read_text())] == ["ok"] * 3

    def body(variant):
        state = torch.load(table1._checkpoint(tmp_path, variant), map_location="cpu", weights_only=True)["state_dict"]
        return {k: v.float() for k, v in state.items() if k.startswith("net.") and not k.startswith("net.model8.6.")}

    lr = torch.load(table1._checkpoint(tmp_path, "l2_ft"), weights_only=True)["hyper_parameters"]["optimizer"]["lr"]

    def moved(a, b):  # the largest change of one weight or bias between two networks, in learning rates
        return max((a[k] - b[k]).abs().max().item() for k in a if k.endswith((".weight", ".bias"))) / lr

    ft, full, l2 = body("l2_ft"), body("rebalanced"), body("l2")
    # Adam moves a parameter by about lr at most per step: the two fine-tuning steps stay within 2 lr of the full
    # network's weights. The independent L2 run starts from the same seeded init as the full one (2 steps each,
    # along gradients of other signs here and there), so it is further from them somewhere.
    assert moved(ft, full) <= 2.2 < moved(l2, full), (moved(ft, full), moved(l2, full))


def test_table1_toy_scale_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("colorization.evaluate")
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    out = tmp_path / "table1"
    toy_eval = ["data.crop_size=32", "data.resize=64", "data.batch_size=4", "data.num_workers=0", "data.val_crops=8"]
    table1.main(["--scale", "toy", "--out", str(out), "--train", *TOY_TRAIN, "--eval", *toy_eval])
    text = (out / "table1.md").read_text()
    rows = _table_rows(text)
    assert rows["Gray"][:1] == ["89.1*"] and rows["Ours (full)"][0] == "89.5*"
    for label in ("Ours (L2)", "Ours (L2, ft)", "Ours (class)", "Ours (full)", "Gray", "Random colors", "Ground truth"):
        assert rows[label][1] != "–", f"{label}: no measured AuC\n{text}"
    measured = json.loads((out / "table1.json").read_text())["measured"]
    assert measured["ground_truth"]["auc"] == pytest.approx(100.0, abs=1e-3)


@pytest.mark.slow  # about 3 minutes on 2 cores: the authors' probe protocol (fold, rescale, 8 layers, 2 backbones)
def test_linear_probe_toy_scale_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("colorization.probe")
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    out = tmp_path / "probe"
    linear_probe.main(["--scale", "toy", "--out", str(out), "--train", "trainer.max_steps=2"])
    rows = _table_rows((out / "linear_probe.md").read_text())
    assert all(rows[layer][2] != "–" for layer in ("conv1", "conv2", "conv3", "conv4", "conv5")), rows


def test_recipes_are_listed_in_the_experiments_readme():
    readme = (REPO / "experiments" / "README.md").read_text()
    for recipe in ("table1", "linear_probe", "benchmarks"):
        assert f"{recipe}/" in readme
    assert sys.executable  # the recipes run the entry points with this interpreter
