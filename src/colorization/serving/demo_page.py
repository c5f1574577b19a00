"""The demo's page (Gradio): upload or pick a sample, set T; the gray input, the colorization and the temperature
strip side by side, the full-resolution result as a download. ``app(colorizer)`` is the whole page (a Space's
``app.py``: build it, ``launch()``)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no network

import torch
from PIL import Image

from colorization.api import Colorizer, shrink, to_uint8
from colorization.color.decode import STRIP_TEMPERATURES
from colorization.data.datasets import BadImageError, load_image
from colorization.data.sources import sample_photo_dir
from colorization.errors import require_extra

log = logging.getLogger(__name__)

SAMPLES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
STRIP_SIDE = 256  # each frame of the on-page strip is at most this long
PREVIEW_SIDE = 1024  # the page's images; the full-resolution result is the download
QUEUE_SIZE = 16  # requests waiting beyond the one being colorized are refused ("queue full"), not piled up


def to_pil(rgb: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(rgb).permute(1, 2, 0).cpu().numpy())


def colorize_file(
    colorizer: Colorizer, path: str | None, temperature: float, strip_temperatures: list[float], out: Path
):
    """The page's one action: (gray input, colorization, temperature strip, path of the full-resolution PNG).

    Raises ValueError with a one-line message for anything the user can fix (no file, not an image)."""
    if not path:
        raise ValueError("Upload a photo (JPEG, PNG, ...) or pick one of the samples.")
    name = Path(path).name
    try:
        image = load_image(Path(path), name)
    except BadImageError as err:  # the reason's kind only: its text names the server's temporary path
        kind = type(err.__cause__).__name__ if err.__cause__ else "unreadable"
        raise ValueError(f"{name} is not an image this demo can read ({kind}): upload a JPEG, PNG, ... photo.") from err
    temperatures = [float(temperature), *strip_temperatures] if colorizer.classification else [float(temperature)]
    ab, *strip_ab = colorizer.predict_ab([image], temperatures)
    target = out / f"{Path(name).stem}_colorized.png"
    to_pil(colorizer.join(image, ab, torch.uint8)).save(target)  # full resolution, made a few rows at a time
    preview = shrink(image, PREVIEW_SIDE)
    color = colorizer.join(preview, ab, torch.uint8)
    gray = colorizer.join(preview, torch.zeros_like(ab), torch.uint8)
    small = shrink(image, STRIP_SIDE)
    strip = [colorizer.join(small, s, torch.uint8) for s in strip_ab] or [colorizer.join(small, ab, torch.uint8)]
    return to_pil(gray), to_pil(color), to_pil(torch.cat(strip, dim=-1)), str(target)


def app(
    colorizer: Colorizer, strip_temperatures: list[float] | None = None, title: str = "Colorful Image Colorization"
):
    """The Gradio page for ``colorizer`` (a ``gradio.Blocks``; ``.launch()`` serves it)."""
    require_extra("demo", "gradio")
    import gradio as gr

    strip_temperatures = list(strip_temperatures or STRIP_TEMPERATURES)
    out = Path(tempfile.mkdtemp(prefix="colorization-demo-"))

    def run(path, temperature):
        try:
            return colorize_file(colorizer, path, temperature, strip_temperatures, out)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # never a stack trace on the page: one line, and the details in the server's log
            log.exception("colorizing %s failed", path)
            raise gr.Error(f"Could not colorize this file ({type(err).__name__}).", print_exception=False) from None

    strip_label = "Temperature strip: T = " + ", ".join(f"{t:g}" for t in strip_temperatures) + " (0 is the mode)"
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(
            f"# {title}\n"
            "Zhang, Isola & Efros, ECCV 2016. Upload a photo (or pick a sample): the network sees its lightness only "
            "and predicts the colors, as the annealed mean of a distribution over ab bins at temperature T "
            "(lower T: more vivid, higher: more muted)."
        )
        with gr.Row():
            upload = gr.File(label="Photo", file_count="single", type="filepath", elem_id="photo")
            temperature = gr.Slider(
                0.01, 1.0, value=colorizer.temperature, step=0.01, label="Temperature T", elem_id="temperature"
            )
        samples = [str(sample_photo_dir() / n) for n in SAMPLES if (sample_photo_dir() / n).is_file()]
        gr.Examples(examples=[[s] for s in samples], inputs=[upload], label="Samples")
        with gr.Row():
            gray = gr.Image(label="Gray input (what the network sees)", type="pil", format="png", elem_id="gray")
            color = gr.Image(label="Colorization", type="pil", format="png", elem_id="color")
        strip = gr.Image(label=strip_label, type="pil", format="png", elem_id="strip")
        download = gr.File(label="Full-resolution result (PNG)", elem_id="download", interactive=False)
        outputs = [gray, color, strip, download]
        # one colorization at a time for both events (an upload and a slider move are separate events), and a
        # bounded queue: set here, so a Space's plain launch() keeps them
        limits = dict(concurrency_limit=1, concurrency_id="colorize")
        upload.change(run, [upload, temperature], outputs, **limits)
        temperature.release(run, [upload, temperature], outputs, **limits)
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    page.sample_dir = str(sample_photo_dir())  # launch(allowed_paths=...) must let the page show the samples
    return page
