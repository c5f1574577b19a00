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
import logging
import multiprocessing
import os
import platform
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from lightning.pytorch.profilers import Profiler
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from colorization.color import ab_bins
from colorization.data.datasets import split_key
from colorization.data.sources import SAMPLE_TRAIN, SAMPLE_VAL, sample_photo_dir
from colorization.models.module import ColorizationModule
from colorization.utils import command

log = logging.getLogger(__name__)

FAST = {  # bench.fast=true on CUDA: what trainer=gpu_fast switches on
    "trainer.precision": "bf16-mixed",
    "trainer.benchmark": True,
    "model.channels_last": True,
    "model.compile": True,
    "data.gpu_decode": True,
}


# ---- inputs ---------------------------------------------------------------------------------------
def write_jpegs(root: Path, n: int, width: int, height: int, quality: int, seed: int = 0) -> list[Path]:
    """ImageNet-like JPEG files from the bundled color photos: random crops (half to all of the photo),
    resized to width x height, flipped at random. Written once; reused when already there."""
    folder = root / f"{n}_{width}x{height}_q{quality}"
    files = sorted(folder.glob("*.jpg"))
    if len(files) == n:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.open(sample_photo_dir() / name).convert("RGB") for name in (*SAMPLE_TRAIN, *SAMPLE_VAL)]
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = min(w, int(scale * h * width / height)), int(scale * h)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        tmp = folder / f".img_{i:05d}.tmp.jpg"
        image.save(tmp, quality=quality)
        os.replace(tmp, folder / f"img_{i:05d}.jpg")
    return sorted(folder.glob("*.jpg"))


def center_crops(files: list[Path], n: int, crop: int) -> torch.Tensor:
    """uint8 (n, 3, crop, crop): the loader's validation crops of the first n files."""
    from colorization.data.datasets import ImageFiles, val_transform

    dataset = ImageFiles(files[:n], val_transform(crop, 256))
    return torch.stack([dataset[i]["image"] for i in range(min(n, len(files)))])


# ---- the 2016-style per-image reference -------------------------------------------------------------
class Reference2016:
    """Per image, on a CPU, as the authors' Caffe Python layers (caffe_traininglayers.py): skimage Lab of the
    whole crop, ab picked at 1/stride, its k nearest bins by scikit-learn's ball tree (their NNEncode; scipy's
    cKDTree, faster, stands in when scikit-learn is not installed: ``nn_search`` says which), Gaussian weights
    written into a dense (Q, h, w) target, the rebalancing weight of its argmax, and the gray check.
    Picklable (loader workers, process pools): the tree is built where it is used."""

    def __init__(self, bins: torch.Tensor, k: int, sigma: float, class_weights: torch.Tensor, threshold: float):
        self.bins = bins.double().numpy()
        self.k, self.sigma, self.threshold = k, sigma, threshold
        self.class_weights = class_weights.float().numpy()
        self._query = None

    @property
    def nn_search(self) -> str:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "scipy cKDTree (scikit-learn not installed; faster than the authors' ball tree)"
        return "scikit-learn NearestNeighbors(algorithm='ball_tree'), as the authors"

    def _build_query(self):
        try:
            from sklearn.neighbors import NearestNeighbors
        except ImportError:
            from scipy.spatial import cKDTree

            tree = cKDTree(self.bins)
            return lambda points: tree.query(points, k=self.k)
        return NearestNeighbors(n_neighbors=self.k, algorithm="ball_tree").fit(self.bins).kneighbors

    def __call__(self, rgb: np.ndarray, stride: int = 4) -> dict[str, np.ndarray]:
        from skimage.color import rgb2lab

        if self._query is None:
            self._query = self._build_query()
        lab = rgb2lab(rgb)
        ab = lab[::stride, ::stride, 1:]
        h, w = ab.shape[:2]
        d, j = self._query(ab.reshape(-1, 2))
        d, j = d.reshape(h * w, -1), j.reshape(h * w, -1)
        wts = np.exp(-(d**2) / (2 * self.sigma**2))
        wts /= wts.sum(1, keepdims=True)
        z = np.zeros((h * w, len(self.bins)), np.float32)
        z[np.arange(h * w)[:, None], j] = wts
        return {
            "L": lab[None, ..., 0].astype(np.float32),
            "z": np.ascontiguousarray(z.T.reshape(-1, h, w)),
            "pixel_weight": self.class_weights[z.argmax(1)].reshape(h, w),
            "mask": np.float32((np.abs(ab) > self.threshold).any()),
        }


class Reference2016Crops(Dataset):
    """The project's training crops (decoded and cropped by its loader workers), then ``Reference2016``."""

    def __init__(self, images: Dataset, reference: Reference2016):
        self.images, self.reference = images, reference

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> dict:
        rgb = self.images[key]["image"].permute(1, 2, 0).numpy()
        return {key: torch.from_numpy(np.asarray(value)) for key, value in self.reference(rgb).items()}


class Repeated(Dataset):
    """``times`` passes over a dataset as one epoch: the timed steps never cross an epoch boundary (on
    ImageNet an epoch is 32k steps of 40; a few thousand bench files would end one every few steps)."""

    def __init__(self, dataset: Dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key):
        i, epoch = split_key(key)
        return self.dataset[(i % len(self.dataset), epoch)]


class DenseSoftCrossEntropy(nn.Module):
    """The authors' loss on a dense soft target Z (B, Q, h, w), rebalanced per pixel, masked per image;
    the same value as ``ColorizationLoss("rebalanced")`` on the sparse form of Z."""

    classification = True

    def forward(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        ce = -(batch["z"] * F.log_softmax(logits.float(), dim=1)).sum(1) * batch["mask"].view(-1, 1, 1)
        loss = (ce * batch["pixel_weight"]).sum() / len(ce)  # summed over pixels / N (the authors' scale)
        return {"loss": loss, "loss_per_pixel": loss / ce[0].numel(), "ce": ce.mean()}


class Legacy2016Module(ColorizationModule):
    """The 2016 configuration of the module: targets come ready from the loader, the loss is dense."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.criterion = DenseSoftCrossEntropy()

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        return batch


def _reference_batch(args) -> int:
    reference, crops = args
    for rgb in crops:
        reference(rgb)
    return len(crops)


# ---- timing -------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    """FLOP/s of an n x n matmul: torch.utils.benchmark's median over blocks of runs (it synchronizes CUDA), with
    this process's thread count (its Timer defaults to one thread)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = benchmark.Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * n**3 / timer.blocked_autorange(min_run_time=0.5).median


class LoopTimer(Profiler):
    """Records when Lightning's training loop waits for the loader, and the host-side data hooks."""

    WATCHED = ("train_dataloader_next", "on_before_batch_transfer", "batch_to_device", "on_after_batch_transfer")

    def __init__(self):
        super().__init__()
        self.spans: dict[str, list[tuple[float, float]]] = {name: [] for name in self.WATCHED}
        self._open: dict[str, float] = {}

    def start(self, action_name: str) -> None:
        # "[Strategy]SingleDeviceStrategy.batch_to_device", not "[LightningModule]....transfer_batch_to_device"
        if action_name.rsplit(".", 1)[-1] in self.WATCHED:
            self._open[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        start = self._open.pop(action_name, None)
        if start is not None:
            self.spans[action_name.rsplit(".", 1)[-1]].append((start, time.perf_counter()))

    def summary(self) -> str:
        return ""

    def within(self, name: str, t0: float, t1: float) -> float:
        return sum(min(b, t1) - max(a, t0) for a, b in self.spans[name] if b > t0 and a < t1)

    def host_hooks(self, t0: float, t1: float) -> float:
        """Seconds in the host-side batch hooks: on_before_batch_transfer, and batch_to_device, inside which Lightning
        runs the copy and on_after_batch_transfer (so that hook is not added again)."""
        return self.within("on_before_batch_transfer", t0, t1) + self.within("batch_to_device", t0, t1)


class StepWindow(L.Callback):
    """Starts the clock after ``warmup`` optimizer steps and stops it ``steps`` steps later."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.t0 = self.t1 = None
        self.peak_memory = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            sync(pl_module.device)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup + self.steps and self.t1 is None:
            sync(pl_module.device)
            self.t1 = time.perf_counter()
            if pl_module.device.type == "cuda":
                self.peak_memory = torch.cuda.max_memory_allocated(pl_module.device)


# ---- the measurements -----------------------------------------------------------------------------
def build_module(cfg: DictConfig, bins: torch.Tensor, **overrides) -> L.LightningModule:
    from colorization.train import build_model

    return build_model(cfg, bins, None, **overrides)


def encoding_speed(cfg, module, files, device: torch.device) -> dict:
    """Images/s of the device-side data path and of the per-image reference, with the same cores."""
    b = cfg.bench
    crops = center_crops(files, b.encode_images, b.encode_crop)
    crops = crops.repeat((b.encode_images + len(crops) - 1) // len(crops), 1, 1, 1)[: b.encode_images]
    batch_size = min(len(crops), cfg.data.batch_size if device.type == "cuda" else 64)
    on_device = crops.to(device)
    module = module.to(device)

    def device_path():
        for i in range(0, len(on_device), batch_size):
            module.on_after_batch_transfer({"image": on_device[i : i + batch_size]})

    reference = Reference2016(module.bins.cpu(), module.encoder.k, module.encoder.sigma,
                              module.class_weights.cpu(), module.hparams.gray_threshold)  # fmt: skip
    images = [c.permute(1, 2, 0).numpy() for c in crops]
    cores = os.cpu_count() or 1
    out = {"images": len(crops), "crop": b.encode_crop, "cores": cores, "torch_threads": torch.get_num_threads()}
    out["reference_nn_search"] = reference.nn_search
    threads = torch.get_num_threads()

    def device_one_thread():
        torch.set_num_threads(1)
        try:
            device_path()
        finally:
            torch.set_num_threads(threads)

    chunks = [(reference, images[i::cores]) for i in range(cores)]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        passes = {  # name -> one pass over the crops
            "device_img_s": device_path,
            "reference_1proc_img_s": lambda: [reference(x) for x in images],
            f"reference_{cores}proc_img_s": lambda: pool.map(_reference_batch, chunks),
        }
        if device.type == "cpu":  # the same single core for both
            passes["device_1thread_img_s"] = device_one_thread

        # interleaved rounds, the best pass of each: a busy spell of a shared machine slows every contender. Timed by
        # hand: torch.utils.benchmark's Timer would run each multi-second pass twice more to warm up, on one thread
        def seconds(fn) -> float:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            return time.perf_counter() - start

        best = {name: seconds(fn) for name, fn in passes.items()}  # the first round also warms up
        for _ in range(b.encode_repeats):
            for name, fn in passes.items():
                best[name] = min(best[name], seconds(fn))
    out.update({name: len(crops) / seconds for name, seconds in best.items()})
    # the two paths agree: the same L, the same nearest bin (up to ties), the same soft-target weights
    sample = module.on_after_batch_transfer({"image": on_device[:8]})
    ref = [reference(x) for x in images[:8]]
    L_ref = torch.from_numpy(np.stack([r["L"] for r in ref]))
    z_ref = torch.from_numpy(np.stack([r["z"] for r in ref]))
    z_dev = torch.zeros_like(z_ref).scatter_(1, sample["idx"].cpu(), sample["wts"].cpu().float())
    out["check_max_abs_L"] = float((sample["L"].cpu() - L_ref).abs().max())
    out["check_max_abs_z"] = float((z_dev - z_ref).abs().max())
    return out


def network_step(module, images: torch.Tensor, steps: int, warmup: int, precision: str, device) -> dict:
    """Forward, backward and Adam on one batch already on the device (real crops, encoded there)."""
    module = module.to(device).train()
    batch_size = len(images)
    batch = module.on_after_batch_transfer({"image": images.to(device)})
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = module.criterion(module(batch["L"]), batch)["loss"]
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    out = {"img_s": steps * batch_size / seconds, "batch_size": batch_size, "precision": precision}
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def fit_throughput(cfg, module, datamodule, warmup: int, steps: int, precision: str, out_dir: Path) -> dict:
    """Lightning fit from the files on disk; the clock runs over ``steps`` steps after ``warmup``."""
    timer, window = LoopTimer(), StepWindow(warmup, steps)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("_target_", None)
    trainer_cfg.update(
        default_root_dir=str(out_dir), precision=precision, max_steps=warmup + steps, max_epochs=-1,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[window], profiler=timer,
    )  # fmt: skip
    trainer = L.Trainer(**trainer_cfg)
    trainer.fit(module, datamodule=datamodule)
    seconds = window.t1 - window.t0
    global_batch = datamodule.hparams.batch_size
    out = {
        "img_s": steps * global_batch / seconds,
        "batch_size": global_batch,
        "precision": precision,
        "seconds": seconds,
        "data_wait_fraction": timer.within("train_dataloader_next", window.t0, window.t1) / seconds,
        "host_data_hooks_fraction": timer.host_hooks(window.t0, window.t1) / seconds,
    }  # fmt: skip
    if window.peak_memory is not None:
        out["peak_memory_gb"] = window.peak_memory / 1e9
    return out


def memory_table(cfg, bins, device) -> list[dict]:
    rows = []
    for precision in cfg.bench.memory_precisions:
        for batch_size in cfg.bench.memory_batches:
            module = build_module(cfg, bins, compile=False)
            images = torch.randint(0, 256, (batch_size, 3, cfg.data.crop_size, cfg.data.crop_size), dtype=torch.uint8)
            try:
                result = network_step(module, images, 2, 1, precision, device)
                rows.append({"precision": precision, "batch_size": batch_size, "peak_gb": result["peak_memory_gb"]})
            except torch.OutOfMemoryError:
                rows.append({"precision": precision, "batch_size": batch_size, "peak_gb": None})
            del module
            torch.cuda.empty_cache()
    return rows


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        model = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = model[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def apply(cfg: DictConfig, values: dict, prefix: str = "") -> None:
    """Set dotted keys ({"data.crop_size": 32}) or nested ones ({"data": {"crop_size": 32}})."""
    with open_dict(cfg):
        for key, value in values.items():
            if isinstance(value, dict):
                apply(cfg, value, f"{prefix}{key}.")
            else:
                OmegaConf.update(cfg, f"{prefix}{key}", value, merge=False)


def run(cfg: DictConfig, overrides: list[str] = ()) -> dict:
    """``overrides``: the command line's key=value pairs, which win over the fast switches (set here, on CUDA)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.bench.fast and device.type == "cuda":
        apply(cfg, FAST)
    explicit = [o.lstrip("+~") for o in overrides if "=" in o and "." in o.split("=", 1)[0]]
    explicit = [o for o in explicit if not o.startswith("hydra.")]
    apply(cfg, OmegaConf.to_container(OmegaConf.from_dotlist(explicit)) if explicit else {})
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
    legacy = build_module(legacy_cfg, bins, _target_=f"{__name__}.Legacy2016Module")
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


def report(results: dict) -> str:
    e, net, fit, old = results["encoding"], results["network"], results["end_to_end"], results["legacy_2016"]
    cores = e["cores"]
    ref_all = e[f"reference_{cores}proc_img_s"]
    lines = [
        f"# colorization.bench  {results['date']}  device={results['device']}",
        f"machine: {json.dumps(results['machine'])}",
        f"command: {results['command']}",
        f"files: {results['files']['n']} JPEGs, mean {results['files']['mean_kb']:.0f} KB; bins Q={results['bins']}",
        f"matmul peak: bf16 {results['matmul']['bf16_tflops']:.3f} TFLOP/s"
        + (f", fp32 {results['matmul']['fp32_tflops']:.3f}" if "fp32_tflops" in results["matmul"] else "")
        + f" (FLOP utilization below is against {results['matmul']['utilization_against']})",
        "",
        f"## data encoding alone ({e['images']} crops of {e['crop']}x{e['crop']}: Lab, soft targets, weights, mask)",
        f"device-side batched ({e['torch_threads']} threads): {e['device_img_s']:10.1f} img/s",
        f"per-image 2016 reference, {cores} processes: {ref_all:10.1f} img/s"
        f"   -> device-side is {e['device_img_s'] / ref_all:.1f}x faster on the same {cores} cores",
        f"reference nearest neighbours: {e['reference_nn_search']}",
    ]
    if "device_1thread_img_s" in e:
        lines.append(
            f"one core each: device-side {e['device_1thread_img_s']:.1f} img/s vs reference "
            f"{e['reference_1proc_img_s']:.1f} img/s -> {e['device_1thread_img_s'] / e['reference_1proc_img_s']:.1f}x"
        )
    lines += [
        f"agreement: max |L - L_ref| = {e['check_max_abs_L']:.2e}, max |Z - Z_ref| = {e['check_max_abs_z']:.2e}",
        "",
        "## training (images/s; util = model FLOP/s over the matmul peak; schedule = wall time for 18 M images)",
        "| configuration | batch | precision | img/s | data wait | TFLOP/s | util | peak GB | schedule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("network step alone", net), ("end-to-end (this config)", fit), ("2016-style end-to-end", old)):
        wait = f"{r['data_wait_fraction']:.0%}" if "data_wait_fraction" in r else "-"
        mem = f"{r['peak_memory_gb']:.1f}" if "peak_memory_gb" in r else "-"
        lines.append(
            f"| {name} | {r['batch_size']} | {r['precision']} | {r['img_s']:.1f} | {wait} | {r['tflops']:.3f} | "
            f"{r['flop_utilization']:.1%} | {mem} | {r['schedule_hours']:.1f} h |"
        )
    lines += [
        "",
        f"end-to-end vs 2016-style: {fit['img_s'] / old['img_s']:.1f}x; end-to-end vs network alone: "
        f"{fit['img_s'] / net['img_s']:.0%}; host-side data hooks: {fit['host_data_hooks_fraction']:.0%} of the time",
    ]
    if "memory_table" in results:
        lines += ["", "## peak GPU memory of the network step (GB)", "| batch | precision | peak GB |", "|---|---|---|"]
        for row in results["memory_table"]:
            peak = "OOM" if row["peak_gb"] is None else f"{row['peak_gb']:.1f}"
            lines.append(f"| {row['batch_size']} | {row['precision']} | {peak} |")
    lines.append(f"\n(peak host RSS {results['peak_host_rss_gb']:.1f} GB; bench took {results['bench_seconds']:.0f} s)")
    return "\n".join(lines)


@command("bench")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    results = run(cfg, list(HydraConfig.get().overrides.task))
    text = report(results)
    out_dir = Path(cfg.paths.output_dir)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (out_dir / "bench.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {out_dir / 'bench.json'}, {out_dir / 'bench.md'}")


if __name__ == "__main__":
    main()
