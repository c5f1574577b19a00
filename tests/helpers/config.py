"""The repository's paths, the tiny training overrides and the config as the CLI composes it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


REFERENCE_DIR = REPO.parent / "shared" / "reference"


# Tiny but real training runs: 32 x 32 crops, batch 4, CSV logger, no worker processes, the networks at an eighth
# of their channels (model.width=0.125: ECCV16 0.5 M parameters, 6 MB checkpoints instead of 0.4 GB). The tests
# named *_full_width* (and those of the authors' weights, which fix the width) train the real networks.
TINY = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "model.width=0.125",
    "data.crop_size=32",
    "data.resize=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val_crops=8",
    "color.prior_images=8",
]


def compose(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """The run config exactly as the CLI would build it, with the run directory set to output_dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from colorization.runs.entry import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*overrides, f"paths.output_dir={output_dir}"])


# A small, fast probe: 96 x 96 crops (the classic geometry needs >= 55), batch 16 without accumulation, no workers.
PROBE_TINY = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "data.crop_size=96",
    "data.resize=null",
    "probe.batch_size=16",
    "probe.accumulate_grad_batches=1",
    "data.num_workers=0",
]


