"""python -m colorization.bench [preset=quick] [key=value ...]: how fast training runs, and where the time goes.

One run measures, on the device it finds (CUDA, else CPU):
1. the peak of a bf16 matmul (the reference for FLOP utilization);
2. the data encoding alone: the device-side path (``lab_inputs`` + ``SoftEncoder``, the module's
   ``on_after_batch_transfer``) against the 2016-style per-image CPU reference (skimage Lab of the whole
   crop, k-NN by KD-tree, Gaussian weights into a dense Q-way target, its argmax's rebalancing weight,
   the gray check: what the authors' Caffe Python layers did), with the same cores for both;
3. the network step alone (forward, backward, Adam) on a batch already on the device;
4. end-to-end training from JPEG files through the real DataModule and LightningModule (Lightning fit):
   images/s, the fraction of time the loop waits for data, peak memory, FLOP utilization;
5. the 2016-style end-to-end configuration: fp32, NCHW, batch 40, the reference encoding in the loader
   workers and a dense soft cross-entropy;
then the ratios, and the wall time of the paper's schedule (450k x 40 = 18 M images) at each rate.
"""

from __future__ import annotations

import copy
import json
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from colorization.color import ab_bins
from colorization.perf.measure import build_module, encoding_speed, fit_throughput, memory_table, network_step
from colorization.perf.reference2016 import Reference2016, Reference2016Crops, Repeated, center_crops, write_jpegs
from colorization.perf.report import report
from colorization.perf.timing import machine, matmul_flops
from colorization.runs.entry import command


def fast_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """bench.fast on CUDA: the config composed again with ``trainer=gpu_fast`` (the command line still wins)."""
    if not (cfg.bench.fast and torch.cuda.is_available()) or any(o.startswith("trainer=") for o in overrides):
        return cfg
    return hydra.compose("bench", overrides=[*overrides, "trainer=gpu_fast"])


def apply(cfg: DictConfig, values: dict, prefix: str = "") -> None:
    """Set dotted keys ({"data.crop_size": 32}) or nested ones ({"data": {"crop_size": 32}})."""
    with open_dict(cfg):
        for key, value in values.items():
            if isinstance(value, dict):
                apply(cfg, value, f"{prefix}{key}.")
            else:
                OmegaConf.update(cfg, f"{prefix}{key}", value, merge=False)


def run(cfg: DictConfig) -> dict:
    """Every measurement on the device found (CUDA, else CPU), with the ratios; plain JSON."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    L.seed_everything(cfg.seed)
    b = cfg.bench
    out_dir = Path(cfg.paths.output_dir)
    results: dict = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m colorization.bench", *sys.argv[1:]]),
        "machine": machine(),
        "device": str(device),
        "config": {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "trainer", "bench")},
    }
    t_start = time.perf_counter()
    files = write_jpegs(Path(b.image_dir).expanduser(), b.files, b.width, b.height, b.quality, cfg.seed)
    results["files"] = {"n": len(files), "mean_kb": float(np.mean([f.stat().st_size for f in files]) / 1e3)}
    bins = ab_bins(cfg.color.bins, download=cfg.color.download)
    results["bins"] = len(bins)

    peak = matmul_flops(device, b.matmul_size, torch.bfloat16)
    results["matmul"] = {"bf16_tflops": peak / 1e12, "utilization_against": "bf16"}
    if device.type == "cpu":  # CPUs without bf16 units emulate it: the fp32 matmul is the honest peak there
        peak = matmul_flops(device, b.matmul_size, torch.float32)
        results["matmul"].update(fp32_tflops=peak / 1e12, utilization_against="fp32")

    module = build_module(cfg, bins)
    results["encoding"] = encoding_speed(cfg, module, files, device)

    crop, batch = cfg.data.crop_size, cfg.data.batch_size
    flops_per_image = 3 * module.net.flops(crop, crop)  # forward + backward (2x forward)
    results["model"] = {"train_gflop_per_image": flops_per_image / 1e9, "crop": crop}
    precision = str(cfg.trainer.precision)
    crops = center_crops(files, batch, crop)
    crops = crops.repeat((batch + len(crops) - 1) // len(crops), 1, 1, 1)[:batch]
    results["network"] = network_step(module, crops, b.steps, b.warmup, precision, device)

    def datamodule(config, batch_size, wrap=None):
        data = hydra.utils.instantiate(config.data, root=str(files[0].parent), batch_size=batch_size, _convert_="all")
        data.setup("fit")
        data.train_set = Repeated(wrap(data.train_set) if wrap else data.train_set, 1000)
        return data

    modern = datamodule(cfg, batch)
    results["end_to_end"] = fit_throughput(cfg, module, modern, b.warmup, b.steps, precision, out_dir / "fit")

    legacy_cfg = copy.deepcopy(cfg)
    apply(legacy_cfg, {"model.channels_last": False, "model.compile": False, "data.gpu_decode": False})
    legacy = build_module(legacy_cfg, bins, _target_="colorization.perf.reference2016.Legacy2016Module")
    reference = Reference2016(legacy.bins, legacy.encoder.k, legacy.encoder.sigma, legacy.class_weights,
                              legacy.hparams.gray_threshold)  # fmt: skip
    legacy_data = datamodule(legacy_cfg, b.legacy_batch_size, lambda images: Reference2016Crops(images, reference))
    results["legacy_2016"] = fit_throughput(
        legacy_cfg, legacy, legacy_data, b.legacy_warmup, b.legacy_steps, "32-true", out_dir / "fit_2016"
    )

    for key in ("network", "end_to_end", "legacy_2016"):
        r = results[key]
        r["tflops"] = r["img_s"] * flops_per_image / 1e12
        r["flop_utilization"] = r["tflops"] * 1e12 / peak
        r["schedule_hours"] = b.schedule_images / r["img_s"] / 3600
    if device.type == "cuda" and b.memory_batches:
        results["memory_table"] = memory_table(cfg, bins, device)
    results["peak_host_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    results["bench_seconds"] = time.perf_counter() - t_start
    return results


@command("bench")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    results = run(fast_config(cfg, list(HydraConfig.get().overrides.task)))
    text = report(results)
    out_dir = Path(cfg.paths.output_dir)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (out_dir / "bench.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {out_dir / 'bench.json'}, {out_dir / 'bench.md'}")


if __name__ == "__main__":
    main()
