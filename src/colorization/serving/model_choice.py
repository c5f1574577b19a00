"""The model an inference command uses, chosen the same way by every one (colorize, evaluate, export, demo, the
study): ``ckpt_path=CKPT`` (a training checkpoint), ``pretrained=DIR_OR_HUB_ID`` (a model of ``colorization.export``:
its directory or a Hugging Face Hub id) or ``model.weights=authors|PATH`` (the authors' released ECCV16)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from colorization.api import Colorizer
from colorization.errors import ConfigError
from colorization.models.authors import fetch_authors_weights, load_authors_weights
from colorization.models.module import ColorizationModule
from colorization.models.pretrained import load_module

CHOICES = (
    "ckpt_path=CKPT (a training checkpoint), pretrained=DIR_OR_HUB_ID (an exported model) or model.weights=authors"
)


def chosen_model(cfg: DictConfig) -> tuple[str, str]:
    """(key, value) of the one model the command line names: exactly one of the three keys, or a one-line error."""
    weights = cfg.model.get("weights") if cfg.get("model") else None
    given = {"ckpt_path": cfg.get("ckpt_path"), "pretrained": cfg.get("pretrained"), "model.weights": weights}
    chosen = {key: str(value) for key, value in given.items() if value}
    if len(chosen) > 1:
        raise ConfigError(f"pass one model, not {' and '.join(f'{k}={v}' for k, v in chosen.items())}")
    if not chosen:
        raise ConfigError(f"no model: pass {CHOICES}")
    return next(iter(chosen.items()))


def load_chosen(cfg: DictConfig) -> ColorizationModule:
    """The one model the command line names, in eval mode, on the CPU."""
    (key, value), download = chosen_model(cfg), bool(cfg.color.download)
    if key == "ckpt_path":
        return load_module(value).eval()
    if key == "pretrained":
        return load_pretrained(value)
    path = fetch_authors_weights(download=download) if value == "authors" else value
    return load_authors_weights(path, download=download).eval()


def load_spec(spec: str, key: str, download: bool = True) -> ColorizationModule:
    """One model named by a single value (the study's ``models.NAME``): ``authors`` or a ``.pth`` file (the authors'
    weights), a ``.ckpt`` file (a training checkpoint), else an exported model's directory or Hub id."""
    spec = str(spec)
    if spec == "authors" or spec.endswith(".pth"):
        path = fetch_authors_weights(download=download) if spec == "authors" else spec
        return load_authors_weights(path, download=download, key=key).eval()
    if spec.endswith(".ckpt"):
        return load_module(spec, key=key).eval()
    return load_pretrained(spec, key)


def load_pretrained(name: str, key: str = "pretrained") -> ColorizationModule:
    """The module of an exported model (``Colorizer.from_pretrained``: a directory, or a Hub id from the Hub's cache or
    a download)."""
    try:
        return Colorizer.from_pretrained(name, device="cpu").model.eval()
    except ConfigError as err:  # the API's message names its call; a command's names its key
        raise ConfigError(f"{key}={name}: {str(err).split('): ', 1)[-1]}") from err
    except (OSError, ValueError) as err:  # huggingface_hub's: not found, offline without a cached copy, a bad id
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = "no such directory, and not" if not Path(name).expanduser().exists() else "not"
        raise ConfigError(f"{key}={name}: {where} an exported model directory or Hub id ({reason})") from err
