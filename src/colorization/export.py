"""python -m colorization.export ckpt_path=CKPT | model.weights=PATH output=DIR [metrics=RUN] [onnx=true]
[push_to_hub=true repo_id=USER/NAME]  (Hydra main).

Writes a directory that huggingface_hub uploads as it is (``Colorizer.save_pretrained``, the hub mixin's):
``model.safetensors`` (the weights, bins and prior), ``config.json`` (architecture, bins, prior, temperature) and
``README.md``, a model card in the Hub's format (YAML metadata, the training config, the evaluation table of a
``colorization.evaluate`` run when ``metrics=`` names one). ``onnx=true`` adds ``model.onnx``: the whole colorizer
as one graph (L in, ab out at the input's size; see ``export_onnx``). ``Colorizer.from_pretrained(DIR)`` loads it
back; ``push_to_hub=true`` uploads it (``huggingface_hub.HfApi.upload_folder``; needs a token and a network).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from colorization.api import Colorizer
from colorization.color.targets import AB_SCALE
from colorization.errors import ConfigError
from colorization.metrics.evaluation import markdown_table
from colorization.models.pretrained import load_model
from colorization.runs.entry import command

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


class ONNXColorizer(nn.Module):
    """The colorizer as one graph: L (B, 1, H, W) in [0, 100] and T (a scalar) -> ab (B, 2, H, W).

    The network, the annealed mean at T (softmax(logits / T) times the bins; an l2 model's regression output
    ignores T) and the bilinear upsampling to H x W, as ``Colorizer.join`` does before adding L back."""

    def __init__(self, colorizer: Colorizer):
        super().__init__()
        self.net = colorizer.model.net
        self.classification = colorizer.classification
        self.register_buffer("bins", colorizer.model.bins.float().clone())

    def forward(self, L: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        out = self.net(L).float()
        if self.classification:
            probs = torch.softmax(out / temperature, dim=1)
            ab = torch.einsum("bqhw,qc->bchw", probs, self.bins)
        else:
            ab = AB_SCALE * out + 0 * temperature  # T kept as an input, so every export has the same signature
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)


def export_onnx(colorizer: Colorizer, path: Path, temperature: float | None = None) -> Path:
    """Write the whole colorizer as ONNX: inputs ``L`` (batch, 1, height, width) float32 in [0, 100] and
    ``temperature`` (a float32 scalar, default the model's T: the graph also holds it as an initializer, so a
    runtime may leave it out), output ``ab`` (batch, 2, height, width); batch, height and width are dynamic.

    torch's TorchScript-based exporter (``dynamo=False``): the torch.export one needs onnxscript, not a dependency."""
    import onnx
    from onnx import numpy_helper

    t = colorizer.temperature if temperature is None else float(temperature)
    graph = ONNXColorizer(colorizer).cpu().eval()
    example = (torch.full((1, 1, 64, 64), 50.0), torch.tensor(t, dtype=torch.float32))
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(
            graph,
            example,
            str(path),
            dynamo=False,
            input_names=["L", "temperature"],
            output_names=["ab"],
            dynamic_axes={"L": axes, "ab": axes},
            opset_version=ONNX_OPSET,
        )
    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2  # ab: the exporter leaves the channels unnamed
    # an initializer named like a graph input is that input's default value (ONNX IR >= 4)
    model.graph.initializer.append(numpy_helper.from_array(example[1].numpy(), name="temperature"))
    model.doc_string = f"colorization: L (B, 1, H, W) in [0, 100], temperature (default {t:g}) -> ab (B, 2, H, W)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def evaluation_table(metrics: str | None) -> str | None:
    """The Markdown table of a ``colorization.evaluate`` run (its directory or its ``metrics.json``)."""
    if not metrics:
        return None
    path = Path(metrics).expanduser()
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"metrics={metrics}: no metrics.json there (a colorization.evaluate run directory)")
    try:
        results = json.loads(path.read_text())
        nan = float("nan")
        results = {row: {k: nan if v is None else v for k, v in values.items()} for row, values in results.items()}
        table = markdown_table(results, "evaluation")
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise ConfigError(f"metrics={metrics}: not a colorization.evaluate metrics.json ({err})") from err
    return table.split("\n", 2)[2].strip()  # without the "# title" line: the card has its own heading


def training_config(cfg: DictConfig, module) -> str:
    """The run's Hydra config (``.hydra/config.yaml`` next to the checkpoint's ``checkpoints/`` folder), or else the
    checkpoint's hyperparameters, as YAML."""
    if cfg.ckpt_path:
        run_config = Path(cfg.ckpt_path).expanduser().resolve().parents[1] / ".hydra" / "config.yaml"
        if run_config.is_file():
            return run_config.read_text().strip()
    hparams = {k: v for k, v in dict(module.hparams).items()}
    return OmegaConf.to_yaml(OmegaConf.create(json.loads(json.dumps(hparams, default=str)))).strip()


def validate(cfg: DictConfig) -> None:
    if not cfg.output:
        raise ConfigError("output is not set: pass output=DIR")
    if cfg.push_to_hub and not cfg.repo_id:
        raise ConfigError("push_to_hub=true needs repo_id=USER/NAME")
    if cfg.temperature is not None and cfg.temperature <= 0:
        raise ConfigError(f"temperature={cfg.temperature} must be > 0")


def export(cfg: DictConfig) -> Path:
    """Write the model directory; returns it."""
    validate(cfg)
    module = load_model(cfg.ckpt_path, cfg.model.weights, download=cfg.color.download)
    if cfg.temperature is not None:
        module.hparams.temperature = float(cfg.temperature)
    colorizer = Colorizer.from_module(module, device="cpu")
    table = evaluation_table(cfg.metrics)
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").unlink(missing_ok=True)  # the mixin keeps an existing card: this export writes its own
    source = f"`{Path(cfg.ckpt_path).name}`" if cfg.ckpt_path else f"the authors' `{Path(cfg.model.weights).name}`"
    card = {
        "training_config": training_config(cfg, module),
        "evaluation": table,
        "source": source,
        "repo_id": cfg.repo_id,
    }
    colorizer.save_pretrained(out, model_card_kwargs=card)
    if cfg.onnx:
        export_onnx(colorizer, out / ONNX_FILE)
    if cfg.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True)
        api.upload_folder(folder_path=out, repo_id=cfg.repo_id, commit_message="colorization.export")
        log.info("uploaded %s to https://huggingface.co/%s", out, cfg.repo_id)
    return out


@command("export")
def main(cfg: DictConfig) -> None:
    out = export(cfg)
    print(f"exported to {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))


if __name__ == "__main__":
    main()
