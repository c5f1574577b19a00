"""study make: the real photos and their recolorizations at 256 x 256 (evaluate's center_crop), and the pairs.

The study directory holds ``study.yaml`` (the protocol and the methods), ``manifest.json`` (per method, each pair's
photo, files and the side of the fake, randomized with the seed; the practice photos apart), ``pairs.csv`` (the same
pairs for an external crowdsourcing platform) and ``images/real|<method>/NNNN.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from colorization.api import to_uint8
from colorization.color import lab_to_rgb, rgb_to_lab
from colorization.errors import ConfigError
from colorization.metrics.protocol import evaluation_dataset, protocol_transform
from colorization.serving.model_choice import load_spec

log = logging.getLogger(__name__)

BASELINES = ("random", "gray")
# the paper's Table 1 row of each loss a checkpoint was trained with
PAPER_ROW_OF_LOSS = {"l2": "Ours (L2)", "unbalanced": "Ours (class)", "rebalanced": "Ours (full)"}
PAPER_ROW_OF_BASELINE = {"random": "random colors", "gray": "gray"}
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def validate(cfg: DictConfig) -> None:
    if not cfg.study:
        raise ConfigError("study is not set: pass study=DIR (the directory the study is written to)")
    if (Path(cfg.study).expanduser() / "study.yaml").exists():
        raise ConfigError(f"study={cfg.study}: a study is already there (study.yaml); choose another directory")
    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"baselines: {unknown} not among {BASELINES}")
    names = [*(cfg.models or {}), *cfg.baselines]
    if not names:
        raise ConfigError("no method: pass models='{name: CKPT_OR_DIR_OR_authors}' or baselines=[random,gray]")
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must differ: {names}")
    bad = [n for n in names if not set(str(n)) <= NAME_CHARACTERS or n == "real"]
    if bad:
        raise ConfigError(f"models: name(s) {bad} must be lower-case letters, digits, '_' or '-' (and not 'real')")
    p = cfg.protocol
    if not isinstance(p.size, int) or p.size < 8 or p.size % 8:
        raise ConfigError(f"protocol.size={p.size} must be a positive multiple of 8")
    if p.display_ms <= 0:
        raise ConfigError(f"protocol.display_ms={p.display_ms} must be > 0")
    if p.practice_trials < 0 or p.test_trials < 1:
        raise ConfigError("protocol.practice_trials must be >= 0 and protocol.test_trials >= 1")


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def load_methods(cfg: DictConfig) -> dict[str, tuple[torch.nn.Module | None, str]]:
    """name -> (colorizer or None for a baseline, the paper's Table 1 row it corresponds to)."""
    methods: dict[str, tuple[torch.nn.Module | None, str]] = {}
    for name, spec in (cfg.models or {}).items():
        module = load_spec(spec, f"models.{name}", download=cfg.color.download)
        methods[str(name)] = (module, PAPER_ROW_OF_LOSS.get(module.hparams.loss["name"], ""))
    for name in cfg.baselines:
        methods[str(name)] = (None, PAPER_ROW_OF_BASELINE[name])
    return methods


@torch.no_grad()
def recolorize(module: torch.nn.Module, rgb: torch.Tensor, temperature: float) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> the photo's own L with the model's ab (upsampled bilinearly), as evaluate."""
    lab = rgb_to_lab(rgb)
    ab = module.predict_ab(lab[:, :1], temperature).float()
    ab = F.interpolate(ab, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat((lab[:, :1], ab), 1))


def with_ab_of(rgb: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    return lab_to_rgb(torch.cat((rgb_to_lab(rgb)[:, :1], ab), 1))


def make(cfg: DictConfig) -> Path:
    """Write the study directory; returns it."""
    validate(cfg)
    study = Path(cfg.study).expanduser()
    size = cfg.protocol.size
    datamodule = hydra.utils.instantiate(cfg.data, crop_size=size, resize=size)  # checks every data key
    data = OmegaConf.create(dict(datamodule.hparams))
    dataset, _ = evaluation_dataset(data, protocol_transform("center_crop", size), None)
    count = len(dataset) if cfg.max_images is None else min(len(dataset), cfg.max_images)
    needed = cfg.protocol.practice_trials + cfg.protocol.test_trials
    if count < needed:
        raise ConfigError(
            f"the data source has {count} photos; the protocol needs {needed} "
            f"(protocol.practice_trials + protocol.test_trials, each trial a different photo)"
        )
    methods = load_methods(cfg)
    device = _device(cfg.device)
    for name in methods:
        (study / "images" / name).mkdir(parents=True, exist_ok=True)
    (study / "images" / "real").mkdir(parents=True, exist_ok=True)

    previous_ab = first_rgb = None  # "random": each photo takes the ab of the one before it (the first: the last's)
    for i in range(count):
        rgb = dataset[i]["image"].float()[None].to(device) / 255
        Image.fromarray(to_uint8(rgb[0]).permute(1, 2, 0).cpu().numpy()).save(
            study / "images" / "real" / f"{i:04d}.png"
        )
        ab = rgb_to_lab(rgb)[:, 1:]
        for name, (module, _) in methods.items():
            if name == "gray":
                fake = with_ab_of(rgb, torch.zeros_like(ab))
            elif name == "random":
                if previous_ab is None:
                    first_rgb = rgb  # done at the end, with the last photo's colors
                    continue
                fake = with_ab_of(rgb, previous_ab)
            else:
                fake = recolorize(module.to(device), rgb, cfg.temperature)
            Image.fromarray(to_uint8(fake[0]).permute(1, 2, 0).cpu().numpy()).save(
                study / "images" / name / f"{i:04d}.png"
            )
        previous_ab = ab
    if "random" in methods:
        fake = with_ab_of(first_rgb, previous_ab)
        Image.fromarray(to_uint8(fake[0]).permute(1, 2, 0).cpu().numpy()).save(
            study / "images" / "random" / f"{0:04d}.png"
        )

    # which photos are practice, and on which side each fake stands: seeded, the same for every participant
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(count).tolist()
    practice = sorted(order[: cfg.protocol.practice_trials])
    test = sorted(order[cfg.protocol.practice_trials :])
    manifest = {"practice": {}, "test": {}}
    for name in methods:
        for phase, photos in (("practice", practice), ("test", test)):
            sides = rng.choice(["left", "right"], size=len(photos)).tolist()
            manifest[phase][name] = [
                {"pair": f"{i:04d}", "real": f"real/{i:04d}.png", "fake": f"{name}/{i:04d}.png", "fake_side": side}
                for i, side in zip(photos, sides, strict=True)
            ]
    (study / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    with open(study / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "phase", "pair", "left", "right", "fake_side"])
        for phase, per_method in manifest.items():
            for name, pairs in per_method.items():
                for p in pairs:
                    left, right = (p["fake"], p["real"]) if p["fake_side"] == "left" else (p["real"], p["fake"])
                    writer.writerow([name, phase, p["pair"], f"images/{left}", f"images/{right}", p["fake_side"]])
    config = {
        "protocol": OmegaConf.to_container(cfg.protocol, resolve=True),
        "seed": cfg.seed,
        "temperature": cfg.temperature,
        "methods": {name: {"paper_row": row} for name, (_, row) in methods.items()},
        "sources": {
            **{str(k): str(v) for k, v in (cfg.models or {}).items()},
        },
        "photos": count,
    }
    (study / "study.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    log.info("study: %d photos, methods %s, in %s", count, list(methods), study)
    return study
