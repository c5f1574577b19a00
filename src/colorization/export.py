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

import logging
from pathlib import Path

from omegaconf import DictConfig

from colorization.api import Colorizer
from colorization.errors import ConfigError
from colorization.runs.entry import command
from colorization.serving.model_card import (
    eval_results,
    evaluation_section,
    read_evaluation,
    training_config,
    training_summary,
)
from colorization.serving.model_choice import load_chosen
from colorization.serving.onnx import ONNX_FILE, export_onnx

log = logging.getLogger(__name__)

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
    module = load_chosen(cfg)
    if cfg.temperature is not None:
        module.hparams.temperature = float(cfg.temperature)
    colorizer = Colorizer.from_module(module, device="cpu")
    evaluation = read_evaluation(cfg.metrics)
    name = cfg.repo_id.split("/")[-1] if cfg.repo_id else Path(cfg.output).name
    training, limitations = training_summary(cfg, module)
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").unlink(missing_ok=True)  # the mixin keeps an existing card: this export writes its own
    source = (
        f"`{Path(cfg.ckpt_path).name}`" if cfg.ckpt_path
        else f"the exported model `{cfg.pretrained}`" if cfg.pretrained
        else "the authors' released ECCV16 (`colorization_release_v2-9b330a0b.pth`)"
    )  # fmt: skip
    card = {
        "training_config": training_config(cfg, module),
        "evaluation": evaluation_section(evaluation, colorizer.temperature),
        "eval_results": eval_results(evaluation),
        "model_name": name,
        "source": source,
        "training": training,
        "limitations": limitations,
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
