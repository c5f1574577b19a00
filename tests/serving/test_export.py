"""python -m colorization.export: a directory the Hub takes as it is, loaded back by Colorizer.from_pretrained, and the
ONNX graph of the whole colorizer checked with onnxruntime against PyTorch on real photos."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import skimage
import torch
import torch.nn.functional as F
from PIL import Image

from colorization import Colorizer
from colorization.errors import ConfigError
from helpers.config import compose


@pytest.fixture(scope="module")
def exported(narrow_checkpoint, tmp_path_factory):
    """The issue's command through the Hydra entry point, with an evaluation table and the ONNX graph."""
    from colorization.export import main

    tmp = tmp_path_factory.mktemp("export")
    metrics = {  # a colorization.evaluate metrics.json, written out here
        "model": {"auc": 87.25, "auc_rebalanced": 60.5, "colorfulness": 30.0},
        "gray": {"auc": 88.5, "auc_rebalanced": 55.0, "colorfulness": 0.0},
        "ground_truth": {"auc": 100.0, "auc_rebalanced": 100.0, "colorfulness": 40.0},
    }
    (tmp / "eval").mkdir()
    (tmp / "eval" / "metrics.json").write_text(json.dumps(metrics))
    argv = ["export", f"ckpt_path={narrow_checkpoint}", f"output={tmp}/model", f"metrics={tmp}/eval", "onnx=true"]
    old_argv, sys.argv = sys.argv, [*argv, f"hydra.run.dir={tmp}/run"]
    try:
        main()
    finally:
        sys.argv = old_argv
    return tmp / "model"


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    data = skimage.data
    return [data.chelsea(), data.coffee()[::2, ::2], data.astronaut()[::2, ::2], data.rocket()[::2, ::2]]


def test_the_directory_is_a_hub_model(exported, narrow_checkpoint):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    assert {p.name for p in exported.iterdir()} == {"model.safetensors", "config.json", "README.md", "model.onnx"}
    ckpt = torch.load(narrow_checkpoint, map_location="cpu", weights_only=True)
    weights = load_file(exported / "model.safetensors")
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(weights[f"model.{key}"], value), key  # every tensor of the checkpoint, bins and prior too
    config = json.loads((exported / "config.json").read_text())
    assert torch.equal(torch.tensor(config["bins"]), ckpt["state_dict"]["encoder.bins"])
    assert (config["arch"], config["temperature"]) == ("eccv16", ckpt["hyper_parameters"]["temperature"])
    card = ModelCard.load(exported / "README.md")  # the Hub's parser: YAML metadata, then Markdown
    assert card.data.library_name == "colorization" and "image-colorization" in card.data.tags
    assert "| model | 87.25 | 60.50 | 30.00 |" in card.text  # the evaluation table
    assert "## Training config" in card.text and "name: rebalanced" in card.text


def test_from_pretrained_gives_the_checkpoints_pixels(exported, narrow_checkpoint, photos, tmp_path, monkeypatch):
    fast = {"device": "cpu", "size": 64}  # the network sees 64 x 64 copies: quick on a CPU
    expected = Colorizer.from_checkpoint(narrow_checkpoint, **fast)(photos[:2])
    loaded = Colorizer.from_pretrained(exported, **fast)(photos[:2])
    for a, b in zip(expected, loaded, strict=True):
        assert np.array_equal(a, b)
    # a Hub id, offline: read from the local cache (laid out here as huggingface_hub's download would)
    snapshot = tmp_path / "hub" / "models--someone--colorizer" / "snapshots" / ("0" * 40)
    shutil.copytree(exported, snapshot, ignore=shutil.ignore_patterns("model.onnx"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = Colorizer.from_pretrained("someone/colorizer", cache_dir=tmp_path / "hub", **fast)
    assert np.array_equal(cached(photos[:2])[0], expected[0])


def test_onnx_matches_pytorch_on_real_photos(exported, narrow_checkpoint, photos):
    import onnx
    import onnxruntime as ort

    module = Colorizer.from_checkpoint(narrow_checkpoint, device="cpu").model
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    graph = onnx.load(str(exported / "model.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["L", "temperature"] and [o.name for o in graph.output] == ["ab"]
    dims = [
        [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in (graph.input[0], graph.output[0])
    ]
    assert dims == [["batch", 1, "height", "width"], ["batch", 2, "height", "width"]]

    def lightness(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        resized = np.asarray(Image.fromarray(photo).resize(size[::-1], Image.BICUBIC)) / 255.0
        return skimage.color.rgb2lab(resized)[..., :1].transpose(2, 0, 1).astype(np.float32)

    cases = [
        ([lightness(p, (256, 256)) for p in photos[:3]], 0.38),  # a batch of 3 at 256 x 256
        ([lightness(photos[3], (200, 304))], 1.0),  # another batch size, height and width, and T
    ]
    worst = 0.0
    for batch, t in cases:
        L = np.stack(batch)
        (ab,) = session.run(None, {"L": L, "temperature": np.array(t, np.float32)})
        with torch.no_grad():  # PyTorch: annealed mean at the network's resolution, upsampled bilinearly
            small = module.predict_ab(torch.from_numpy(L), t)
            expected = F.interpolate(small, size=L.shape[-2:], mode="bilinear", align_corners=False).numpy()
        assert ab.shape == (len(L), 2, *L.shape[-2:])
        worst = max(worst, float(np.abs(ab - expected).max()))
        assert np.abs(expected).max() > 1.0  # not a trivially gray prediction
    assert worst < 0.5, worst
    (default,) = session.run(None, {"L": np.stack(cases[0][0])})  # the temperature left out: its default, 0.38
    (given,) = session.run(None, {"L": np.stack(cases[0][0]), "temperature": np.array(0.38, np.float32)})
    assert np.array_equal(default, given)


def test_bad_options_fail_in_one_line(narrow_checkpoint, tmp_path):
    from colorization.export import export

    with pytest.raises(ConfigError, match="push_to_hub=true needs repo_id"):
        export(compose([f"ckpt_path={narrow_checkpoint}", "push_to_hub=true"], tmp_path, "export"))
    with pytest.raises(ConfigError, match="metrics=.*no metrics.json"):
        export(compose([f"ckpt_path={narrow_checkpoint}", f"metrics={tmp_path}"], tmp_path, "export"))
    with pytest.raises(ConfigError, match="no model"):
        export(compose([], tmp_path, "export"))


def test_the_card_says_on_what_its_evaluation_was_made_and_round_trips_through_the_hub(narrow_checkpoint, tmp_path):
    """A real evaluation at T = 0.2, exported at T = 0.3: the card states the data, the image count, the T and the
    command of its table, the training (steps, data) and its limits; the Hub's parsers read its model-index back."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    from colorization.evaluate import evaluate
    from colorization.export import export
    from helpers.evaluation import FAST

    evaluation = tmp_path / "eval"
    table = evaluate(compose([*FAST, f"ckpt_path={narrow_checkpoint}", "temperature=0.2", "num_examples=0"], evaluation,
                             "evaluate"))  # fmt: skip
    out = export(compose([f"ckpt_path={narrow_checkpoint}", f"output={tmp_path / 'model'}", f"metrics={evaluation}",
                          "temperature=0.3"], tmp_path / "run", "export"))  # fmt: skip
    card = ModelCard.load(out / "README.md")
    assert "On 2 images of the 2 held-out sample photos (scikit-image) (center_crop 64), decoded at T = 0.2" in card.text
    assert "(this export's default is T = 0.3" in card.text
    assert "| trained | 2 steps of batch 4 on the 7 bundled sample photos (scikit-image)" in card.text
    assert "trained for only 2 steps" in card.text and "pip install colorization" in card.text
    assert "github.com/richzhang" not in card.text  # it links this project, not the authors' code
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["auc"].metric_value == pytest.approx(table["model"]["auc"], abs=1e-4)
    assert results["auc"].dataset_name == "the 2 held-out sample photos (scikit-image)"
    name, index = card.data.model_name, card.data.to_dict()["model-index"]
    assert model_index_to_eval_results(eval_results_to_model_index(name, card.data.eval_results)) == (
        name, card.data.eval_results
    )
    assert model_index_to_eval_results(index)[1] == card.data.eval_results


def test_from_pretrained_prints_nothing(exported, capsys):
    Colorizer.from_pretrained(exported, device="cpu")
    assert capsys.readouterr().out == ""  # huggingface_hub's mixin would print "Loading weights from local directory"


def test_a_foreign_evaluation_json_is_one_line(narrow_checkpoint, tmp_path):
    from colorization.export import export

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"model": {"auc": 80.0}}))
    (tmp_path / "eval" / "evaluation.json").write_text(json.dumps({"images": "many"}))
    args = [f"ckpt_path={narrow_checkpoint}", f"output={tmp_path / 'model'}", f"metrics={tmp_path / 'eval'}"]
    with pytest.raises(ConfigError, match=r"metrics=.*: not a colorization.evaluate evaluation.json"):
        export(compose(args, tmp_path / "run", "export"))
