"""What the exported model's card says: the evaluation table of an evaluate run, the training config."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colorization.errors import ConfigError
from colorization.metrics.evaluation import markdown_table


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
