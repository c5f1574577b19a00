"""What the exported model's card says, and only what is known: the evaluation table with the data, image count, T
and command that made it (an evaluate run's ``evaluation.json``), its ``model-index`` metadata, how the weights were
trained (steps, batch, data: from the checkpoint and its run's config), the limitations that follow, the config."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colorization.checkpoints import load_checkpoint
from colorization.data.sources import SAMPLE_TRAIN
from colorization.errors import ConfigError
from colorization.metrics.evaluation import COLUMNS, markdown_table

# The card: huggingface_hub's ModelCard template (Jinja), filled by Colorizer.generate_model_card and export.
MODEL_CARD = """---
{{ card_data }}
---

# {{ title | default(model_name, true) | default("Colorful Image Colorization", true) }}

A colorizer made with [colorization]({{ repo_url }}), an implementation of Zhang, Isola & Efros, *Colorful Image
Colorization* (ECCV 2016, [paper]({{ paper_url }})): a gray photo's lightness L in, its colors (Lab ab) out, as the
annealed mean (T = {{ temperature }}) of a distribution over {{ num_bins }} ab bins.

| | |
|---|---|
| architecture | {{ arch }} (batchnorm {{ batchnorm }}, input (L - 50) / {{ input_scale }}, width {{ width }}) |
| loss | {{ loss }} |
| parameters | {{ parameters }} |
| weights | {{ source }} |
| trained | {{ training }} |

## Use

```bash
pip install colorization
```

```python
from colorization import Colorizer

colorizer = Colorizer.from_pretrained("{{ repo_id | default("<this directory or repo id>", true) }}")
colorized = colorizer("photo.jpg")          # a PIL image at the photo's full resolution
colorized.save("photo_color.png")
```

## Evaluation

{{ evaluation | default("Not evaluated at export: run `python -m colorization.evaluate ckpt_path=CKPT` and export with `metrics=<its run dir>`.", true) }}

## Limitations

{{ limitations }}

## Training config

```yaml
{{ training_config }}
```
"""

AUTHORS_TRAINING = "by the authors, on the ImageNet training set (1.3 M photos), 450k iterations of batch 40"
SHORT_TRAINING = 100_000  # fewer steps than this: the card says the model is a demonstration, not a colorizer


def read_evaluation(metrics: str | None) -> tuple[dict, dict | None] | None:
    """The rows of a ``colorization.evaluate`` run (its directory or its ``metrics.json``) and its context."""
    if not metrics:
        return None
    path = Path(metrics).expanduser()
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"metrics={metrics}: no metrics.json there (a colorization.evaluate run directory)")
    try:
        results = json.loads(path.read_text())
        nan = float("nan")
        results = {
            row: {k: nan if v is None else float(v) for k, v in values.items()} for row, values in results.items()
        }
        markdown_table(results, "")  # the table this card shows: refuse what it cannot show
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise ConfigError(f"metrics={metrics}: not a colorization.evaluate metrics.json ({err})") from err
    context_file = path.with_name("evaluation.json")
    if not context_file.is_file():
        return results, None
    try:
        context = json.loads(context_file.read_text())
        missing = [k for k in ("images", "data", "protocol", "temperature") if k not in context]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        context["temperature"], context["images"] = float(context["temperature"]), int(context["images"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"metrics={metrics}: not a colorization.evaluate evaluation.json ({err})") from err
    return results, context


def evaluation_section(evaluation: tuple[dict, dict | None] | None, temperature: float) -> str | None:
    """The card's evaluation: which data, how many images, which T and command, then the table."""
    if evaluation is None:
        return None
    results, context = evaluation
    table = markdown_table(results, "").split("\n", 2)[2].strip()  # without the title line: the card has its own
    if context is None:
        return (
            "The data, image count and T of this table were not recorded (an evaluate run before evaluation.json).\n\n"
            + table
        )
    what = (
        f"On {context['images']} images of {context['data']} ({context['protocol']}), decoded at "
        f"T = {context['temperature']:g}"
    )
    if abs(context["temperature"] - temperature) > 1e-9:
        what += f" (this export's default is T = {temperature:g}: its own outputs differ from these)"
    command = f", by `{context['command']}`" if context.get("command") else ""
    return f"{what}{command}:\n\n{table}"


def eval_results(evaluation: tuple[dict, dict | None] | None) -> list | None:
    """The model row as the Hub's ``model-index`` entries (``huggingface_hub.EvalResult``)."""
    from huggingface_hub import EvalResult

    if evaluation is None or evaluation[1] is None:
        return None  # the Hub's model-index needs the dataset: without evaluation.json it is not known
    results, context = evaluation
    return [
        EvalResult(
            task_type="image-to-image",
            task_name="Image colorization",
            dataset_type=context.get("dataset") or context["data"],
            dataset_name=context["data"],
            dataset_config=context["protocol"],
            metric_type=key,
            metric_name=f"{COLUMNS[key]} (T = {context['temperature']:g})",
            metric_value=round(value, 4),
        )
        for key, value in results["model"].items()
        if key in COLUMNS and value == value and abs(value) != float("inf")
    ]


def training_summary(cfg: DictConfig, module) -> tuple[str, str]:
    """How the weights were trained, in a line, and the card's limitations."""
    limits = (
        "The colors are plausible, not recovered: the network infers them from gray levels and content, and where "
        "several colors are likely the annealed mean picks a muted one. Photos unlike its training data colorize worse."
    )
    if cfg.get("pretrained"):
        return f"as the card of `{cfg.pretrained}` says", limits
    if not cfg.ckpt_path:
        return AUTHORS_TRAINING, limits + " The weights are the authors' release, unchanged."
    ckpt = load_checkpoint(cfg.ckpt_path, "ckpt_path", mmap=True)
    steps = int(ckpt.get("global_step", 0))
    data = ckpt.get("datamodule_hyper_parameters") or {}
    where = {
        "samples": f"the {len(SAMPLE_TRAIN)} bundled sample photos (scikit-image)",
        "folder": f"the images under {data.get('root')}",
        "hf": f"{data.get('path')} split {data.get('split')}",
        "shards": f"the shards at {data.get('root')}",
    }.get(data.get("source"), "data not recorded in the checkpoint")
    line = f"{steps} steps of batch {data.get('batch_size', '?')} on {where} (`colorization.train`)"
    if steps < SHORT_TRAINING:
        limits += (
            f" This model was trained for only {steps} steps on {where}: it shows the pipeline works, it is not a "
            "usable colorizer (the paper trains 450k steps of batch 40 on ImageNet)."
        )
    return line, limits


def training_config(cfg: DictConfig, module) -> str:
    """The run's Hydra config (``.hydra/config.yaml`` next to the checkpoint's ``checkpoints/`` folder), or else the
    checkpoint's hyperparameters, as YAML."""
    if cfg.ckpt_path:
        run_config = Path(cfg.ckpt_path).expanduser().resolve().parents[1] / ".hydra" / "config.yaml"
        if run_config.is_file():
            return run_config.read_text().strip()
    hparams = {k: v for k, v in dict(module.hparams).items()}
    return OmegaConf.to_yaml(OmegaConf.create(json.loads(json.dumps(hparams, default=str)))).strip()
