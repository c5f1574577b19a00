"""The demo's page (Gradio): upload a photo or click a sample's thumbnail, set T and the working resolution; the
photo as uploaded, a before / after slider (the gray input against the colorization), the full-resolution result
as a download beside it, and the paper's temperature strip with each frame's T. Clearing the photo clears the page,
quietly. ``app(colorizer)`` is the whole page (a Space's ``app.py``: build it, ``launch()``)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no network

import torch
from PIL import Image, ImageDraw

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


class DemoResult(NamedTuple):
    photo: Image.Image  # as uploaded (shrunk for the page)
    gray: Image.Image  # its lightness only: what the network sees
    color: Image.Image  # the colorization, at the page's size
    strip: Image.Image  # one frame per T, each labeled
    download: str  # the full-resolution PNG


def labeled_strip(frames: list[torch.Tensor], temperatures: list[float]) -> Image.Image:
    """The frames side by side over a white band naming each one's T (0: the mode)."""
    strip = to_pil(torch.cat(frames, dim=-1))
    band = 22
    out = Image.new("RGB", (strip.width, strip.height + band), "white")
    out.paste(strip, (0, 0))
    draw, width = ImageDraw.Draw(out), strip.width / len(frames)
    for i, t in enumerate(temperatures):
        text = "T = 0 (mode)" if t == 0 else f"T = {t:g}"
        draw.text((i * width + width / 2, strip.height + band / 2), text, fill="black", anchor="mm")
    return out


def colorize_file(
    colorizer: Colorizer,
    path: str | None,
    temperature: float,
    strip_temperatures: list[float],
    out: Path,
    size: int | None = None,
) -> DemoResult:
    """The page's one action. ``size``: the network's working resolution (default: the colorizer's).

    Raises ValueError with a one-line message for anything the user can fix (no file, not an image)."""
    if not path:
        raise ValueError("Upload a photo (JPEG, PNG, ...) or pick one of the samples.")
    if size is not None and (size < 64 or size % 8):
        raise ValueError(f"The working resolution must be a multiple of 8 of at least 64, not {size}.")
    name = Path(path).name
    try:
        image = load_image(Path(path), name)
    except BadImageError as err:  # the reason's kind only: its text names the server's temporary path
        kind = type(err.__cause__).__name__ if err.__cause__ else "unreadable"
        raise ValueError(f"{name} is not an image this demo can read ({kind}): upload a JPEG, PNG, ... photo.") from err
    strip_temperatures = strip_temperatures if colorizer.classification else [float(temperature)]
    ab, *strip_ab = colorizer.predict_ab([image], [float(temperature), *strip_temperatures], size=size)
    target = out / f"{Path(name).stem}_colorized.png"
    to_pil(colorizer.join(image, ab, torch.uint8)).save(target)  # full resolution, made a few rows at a time
    preview = shrink(image, PREVIEW_SIDE)
    color = colorizer.join(preview, ab, torch.uint8)
    gray = colorizer.join(preview, torch.zeros_like(ab), torch.uint8)
    small = shrink(image, STRIP_SIDE)
    strip = labeled_strip([colorizer.join(small, s, torch.uint8) for s in strip_ab], strip_temperatures)
    return DemoResult(to_pil(preview), to_pil(gray), to_pil(color), strip, str(target))


def app(
    colorizer: Colorizer, strip_temperatures: list[float] | None = None, title: str = "Colorful Image Colorization"
):
    """The Gradio page for ``colorizer`` (a ``gradio.Blocks``; ``.launch()`` serves it)."""
    require_extra("demo", "gradio")
    import gradio as gr

    strip_temperatures = list(strip_temperatures or STRIP_TEMPERATURES)
    out = Path(tempfile.mkdtemp(prefix="colorization-demo-"))
    samples = [str(sample_photo_dir() / n) for n in SAMPLES if (sample_photo_dir() / n).is_file()]

    def run(path, temperature, size):
        if not path:  # the photo was cleared: clear the page, no error
            return None, None, None, None
        try:
            result = colorize_file(colorizer, path, temperature, strip_temperatures, out, int(size))
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # never a stack trace on the page: one line, and the details in the server's log
            log.exception("colorizing %s failed", path)
            raise gr.Error(f"Could not colorize this file ({type(err).__name__}).", print_exception=False) from None
        return result.photo, (result.gray, result.color), result.strip, result.download

    def pick_sample(event):
        return samples[event.index]

    pick_sample.__annotations__ = {"event": gr.SelectData}  # Gradio passes the click by this type (gr is local here)

    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(
            f"# {title}\n"
            "Zhang, Isola & Efros, ECCV 2016. Upload a photo or click a sample: the network sees its lightness only "
            "and predicts the colors, as the annealed mean of a distribution over ab bins at temperature T "
            "(lower T: more vivid, higher: more muted). Drag the slider to compare the gray input with the result."
        )
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Photo", file_count="single", type="filepath", elem_id="photo", height=120)
                photo = gr.Image(label="Your photo", type="pil", format="png", interactive=False, elem_id="original",
                                 height=260, buttons=[])  # fmt: skip
                gallery = gr.Gallery(value=[(s, Path(s).stem) for s in samples], label="Samples: click one",
                                     columns=5, height=120, allow_preview=False, elem_id="samples")  # fmt: skip
                temperature = gr.Slider(
                    0.01, 1.0, value=colorizer.temperature, step=0.01, label="Temperature T", elem_id="temperature"
                )
                size = gr.Slider(128, 768, value=colorizer.size, step=32, elem_id="size",
                                 label="Working resolution: the network sees the photo at this side (its training size: 256)")  # fmt: skip
            with gr.Column(scale=3):
                slider = gr.ImageSlider(label="Gray input | colorization", type="pil", format="png", elem_id="slider",
                                        max_height=560)  # fmt: skip
                download = gr.File(label="Full-resolution result (PNG)", elem_id="download", interactive=False,
                                   height=80)  # fmt: skip
        strip = gr.Image(label="Temperature strip", type="pil", format="png", elem_id="strip", buttons=["download"])
        outputs = [photo, slider, strip, download]
        # one colorization at a time for every event (an upload, a slider move, a sample), and a bounded queue: set
        # here, so a Space's plain launch() keeps them
        limits = dict(concurrency_limit=1, concurrency_id="colorize")
        upload.change(run, [upload, temperature, size], outputs, **limits)
        temperature.release(run, [upload, temperature, size], outputs, **limits)
        size.release(run, [upload, temperature, size], outputs, **limits)
        gallery.select(pick_sample, None, upload)  # the sample becomes the upload, whose change colorizes it
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    page.sample_dir = str(sample_photo_dir())  # launch(allowed_paths=...) must let the page show the samples
    return page
