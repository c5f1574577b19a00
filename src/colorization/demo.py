"""python -m colorization.demo ckpt_path=CKPT | model.weights=PATH | pretrained=DIR_OR_HUB_ID  (Hydra main).

A web page for a trained colorizer (Gradio), on a CPU as on a GPU: upload a photo or pick a sample, set the
temperature; the page shows the gray input, the colorization and the paper's temperature strip side by side, and
offers the full-resolution result as a PNG download. A file that is not an image gets a one-line message, never a
stack trace. ``app(colorizer)`` builds the same page for a Hugging Face Space (``app.py``: build it, ``launch()``).
Gradio's usage analytics are off (``GRADIO_ANALYTICS_ENABLED=False``): the page makes no outside connection.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no network

from omegaconf import DictConfig

from colorization.api import Colorizer
from colorization.data.image_files import set_max_pixels
from colorization.errors import ConfigError, require_extra
from colorization.runs.entry import command
from colorization.serving.demo_page import app
from colorization.serving.model_choice import load_chosen

log = logging.getLogger(__name__)

def load_colorizer(cfg: DictConfig) -> Colorizer:
    return Colorizer.from_module(load_chosen(cfg), cfg.device, size=cfg.size)


@command("demo")
def main(cfg: DictConfig) -> None:
    require_extra("demo", "gradio")  # before a model is loaded
    if not isinstance(cfg.port, int) or not 0 < cfg.port < 65536:
        raise ConfigError(f"port={cfg.port} must be an integer in 1..65535")
    set_max_pixels(cfg.max_pixels)
    colorizer = load_colorizer(cfg)
    if cfg.temperature is not None:
        if cfg.temperature <= 0:
            raise ConfigError(f"temperature={cfg.temperature} must be > 0")
        colorizer.model.hparams.temperature = float(cfg.temperature)
    page = app(colorizer, list(cfg.strip_temperatures))
    log.info("the demo on http://%s:%d (device %s)", cfg.host, cfg.port, colorizer.device)
    page.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=False,
        ssr_mode=False,
        show_error=False,
        allowed_paths=[page.sample_dir],
        max_file_size=cfg.max_file_size,
        quiet=True,
    )


if __name__ == "__main__":
    main()
