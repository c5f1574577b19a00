"""python -m colorization.train [experiment=rebalanced] [key=value ...]  (Hydra main)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from colorization.checkpoints import load_checkpoint
from colorization.color import load_reference, uint8_to_lightness
from colorization.color.bins import resolve_bins
from colorization.color.encode import check_soft_encoding
from colorization.color.prior import check_lam
from colorization.errors import ConfigError, check_number
from colorization.models.batchnorm import check_kind
from colorization.models.data_init import INIT_METHODS, kmeans_init
from colorization.models.init_from import (
    AUTHORS_HEAD,
    AUTHORS_LAYOUT,
    is_authors_state,
    load_authors_weights_into,
    load_body_weights,
    network_tensors,
    read_init_state,
)
from colorization.models.losses import check_variant
from colorization.models.module import check_temperature, network_class
from colorization.models.pretrained import authors_bins, check_authors_state_dict
from colorization.prior import estimate_prior_from_data, load_prior, save_prior
from colorization.sweeps import job_guard
from colorization.utils import (
    build_trainer,
    command,
    logged_run,
)

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Cheap checks of the values that would otherwise fail deep inside a run."""
    for key in ("data.crop_size", "data.batch_size", "trainer.max_steps", "model.init_batches"):
        check_number(OmegaConf.select(cfg, key), key, integer=True)
    for key in ("data.resize", "data.num_workers", "color.prior_images"):
        if OmegaConf.select(cfg, key) is not None:
            check_number(OmegaConf.select(cfg, key), key, integer=True)
    if (cfg.data.get("num_workers") or 0) < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers} must be >= 0")
    check_variant(cfg.loss.name)  # each check lives with what it checks; here they run before any data is read
    check_lam(cfg.loss.lam)
    check_soft_encoding(cfg.loss.k, cfg.loss.sigma)
    check_temperature(cfg.model.temperature)
    model = cfg.model
    try:
        net = network_class(model.arch)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.data.crop_size % net.crop_multiple:
        raise ConfigError(
            f"data.crop_size={cfg.data.crop_size}: model.arch={model.arch} needs a multiple of {net.crop_multiple}"
        )
    check_kind(model.get("batchnorm", "caffe"))
    if model.get("init", "default") not in INIT_METHODS:
        raise ConfigError(f"model.init={model.init!r} is not one of {INIT_METHODS}")
    if (cfg.color.get("prior_images") or 1) < 1:
        raise ConfigError(f"color.prior_images={cfg.color.prior_images} must be >= 1 (or null: every image)")
    if cfg.ckpt_path and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """ckpt_path=last: the newest <log_dir>/<task_name>/runs/*/checkpoints/last.ckpt (or a SLURM requeue
    checkpoint, runs/*/hpc_ckpt_*.ckpt). None, with a warning, when there is none yet: a requeued job can
    always pass ckpt_path=last."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    runs = Path(cfg.paths.log_dir).expanduser() / cfg.task_name / "runs"
    found = [*runs.glob("*/checkpoints/last.ckpt"), *runs.glob("*/hpc_ckpt_*.ckpt")]
    if not found:
        log.warning("ckpt_path=last: no checkpoint under %s/*/checkpoints/last.ckpt; starting from scratch", runs)
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)


def resolve_prior(cfg: DictConfig, datamodule, bins: torch.Tensor, rank: int = 0) -> torch.Tensor:
    """color.prior: "official" (the authors' ImageNet prior), a prior file (colorization.prior's .npz, or the
    authors' prior_probs.npy), or "estimate": a seeded uniform sample of the training images, cached per data
    source, bins, sample and stride. Under DDP, ranks > 0 wait for rank 0's estimate, so all use the same prior."""
    source = str(cfg.color.prior)
    if source == "official":
        prior = torch.from_numpy(load_reference("prior_probs.npy", None, cfg.color.download))
        if len(prior) != len(bins):
            raise ConfigError(
                f"color.prior=official has {len(prior)} bins but color.bins={cfg.color.bins} has {len(bins)}"
            )
        return prior
    if source != "estimate":
        return load_prior(source, bins, download=cfg.color.download)
    stride = network_class(cfg.model.arch).target_stride
    color = cfg.color
    key = json.dumps(
        {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "bins": bins.tolist(),
            "images": color.prior_images,
            "seed": color.prior_seed,
            "buffer": color.prior_buffer,
            "stride": stride,
        },
        sort_keys=True,
        default=str,
    )
    cache = Path(cfg.paths.cache_dir).expanduser() / f"prior_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if rank > 0:
        wait_for_file(cache, "rank 0's prior estimate")
    if cache.is_file():
        log.info("prior: cached estimate %s", cache)
        return load_prior(cache, bins)
    prior, counts, record = estimate_prior_from_data(
        datamodule, bins, color.prior_images, color.prior_seed, stride, color.prior_buffer, cfg.loss.lam
    )
    save_prior(cache, bins, prior, counts, record)
    return prior


def wait_for_file(path: Path, what: str, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"waited {timeout:.0f} s for {what} ({path}); is rank 0 running?")
        time.sleep(1.0)


def data_dependent_init(cfg: DictConfig, model, datamodule, device: torch.device) -> None:
    """model.init=kmeans: the authors' within-layer k-means init on ``model.init_batches`` training batches
    (a seeded uniform sample), on ``device``. Recorded in the run's log; a resumed run skips it."""
    images = cfg.model.init_batches * cfg.data.batch_size
    start = time.monotonic()
    datamodule.setup("fit")
    batches = [
        uint8_to_lightness(b.to(device))
        for b in datamodule.sample_batches(images, cfg.seed + 1, cfg.color.prior_buffer)
    ]
    net = model.net.to(device)
    records = kmeans_init(net, batches, seed=cfg.seed)
    model.net.cpu()
    log.info(
        "model.init=kmeans: %d layers initialized on %d training images in %.0f s",
        len(records),
        sum(len(b) for b in batches),
        time.monotonic() - start,
    )


def set_on_command_line(key: str) -> bool:
    """Whether this run's command line set ``key`` (``model.batchnorm=...``) or chose its config group (``model=...``).
    False outside a Hydra app (a config composed in Python)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    names = [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    return any(key == name or key.startswith(name + ".") for name in names)


def adopt_authors_weights(cfg: DictConfig, state: dict) -> torch.Tensor:
    """``model.init_from`` is the authors' released file: the run takes its layout (``model=eccv16_port``'s) and
    its 313 bins, which it returns. A value the command line set that disagrees is a one-line ConfigError."""
    key = f"model.init_from={cfg.model.init_from}"
    check_authors_state_dict(state, key)
    for name, value in AUTHORS_LAYOUT.items():
        current = cfg.model.get(name)
        if current == value or (isinstance(value, float) and current is not None and float(current) == value):
            continue
        if name in ("arch", "width") or set_on_command_line(f"model.{name}"):  # arch, width: other shapes
            raise ConfigError(
                f"{key} is the authors' ECCV16 in their port's layout: model.{name}={current} disagrees "
                f"(it needs {value}; use model=eccv16_port)"
            )
        log.info(
            "model.init_from: the authors' file sets model.%s=%s (was %s), as model=eccv16_port", name, value, current
        )
        cfg.model[name] = value
    bins = authors_bins(state[AUTHORS_HEAD], key, download=cfg.color.download)
    if cfg.color.bins != "srgb" or set_on_command_line("color.bins"):
        if not torch.equal(resolve_bins(cfg), bins):
            raise ConfigError(
                f"color.bins={cfg.color.bins} disagrees with the 313 bins of {key} (their head is kept): "
                "use color.bins=official or leave it unset"
            )
    else:
        log.info("model.init_from: the authors' 313 bins (color.bins=srgb, the default, is not used)")
    return bins


def build_model(cfg: DictConfig, bins: torch.Tensor, prior: torch.Tensor | None, **overrides) -> L.LightningModule:
    """The LightningModule of cfg.model, with plain containers in its hyperparameters (so checkpoints load
    with weights_only=True); ``model.init_from`` is a run option, not a hyperparameter."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    for run_option in ("init_from", "init_batches"):
        model_cfg.pop(run_option, None)
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    # _recursive_=False: model.optimizer and model.scheduler stay configs (the module instantiates them itself)
    return hydra.utils.instantiate(
        model_cfg, loss=loss, bins=bins, prior=prior, _convert_="all", _recursive_=False, **overrides
    )


def train(cfg: DictConfig) -> L.Trainer:
    """Build everything from the config and fit; returns the trainer (metrics, model, checkpoints)."""
    validate(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path:
        load_checkpoint(ckpt_path, "ckpt_path", mmap=True)  # refuse a file that would run code, before any work
    init_state = read_init_state(cfg.model.init_from) if cfg.model.get("init_from") else None
    authors = init_state is not None and is_authors_state(init_state)
    if init_state is not None and not authors:
        network_tensors(init_state, cfg.model.init_from)  # one of our checkpoints, or a one-line error now
    bins = adopt_authors_weights(cfg, init_state) if authors else resolve_bins(cfg)
    check_soft_encoding(cfg.loss.k, cfg.loss.sigma, len(bins))  # k against Q, before any data is read
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    trainer: L.Trainer = build_trainer(cfg)
    datamodule.check_world_size(trainer.world_size)  # before the prior: fail in one line, early
    datamodule.check_not_empty(trainer.world_size)
    if cfg.trainer.get("sync_batchnorm") and trainer.strategy.root_device.type != "cuda":
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm is GPU-only)")
    if cfg.trainer.get("sync_batchnorm") and cfg.model.get("batchnorm") == "caffe":
        raise ConfigError(
            "trainer.sync_batchnorm=true would replace model.batchnorm=caffe by torch's SyncBatchNorm, which has "
            "another moving average: use model.batchnorm=affine, or trainer.sync_batchnorm=false"
        )
    with logged_run(trainer, cfg):  # the config to W&B first; the W&B run closed whatever happens
        L.seed_everything(cfg.seed, workers=True)
        prior = resolve_prior(cfg, datamodule, bins, trainer.global_rank)
        # seed again: whether the prior was estimated (drawing random crops) or read from the cache, the
        # network starts from the same weights, so a resumed run and a fresh one agree
        L.seed_everything(cfg.seed, workers=True)
        # _convert_="all": plain dicts and lists in the hyperparameters, so checkpoints load with weights_only=True
        model = build_model(cfg, bins, prior)
        if not cfg.model.get("compile"):  # Lightning's model summary: sizes and FLOPs at the crop (one forward)
            model.example_input_array = torch.zeros(1, 1, cfg.data.crop_size, cfg.data.crop_size)
        init = cfg.model.get("init", "default")
        if authors:  # the authors' released weights: they take precedence over model.init
            tensors = load_authors_weights_into(model, init_state, cfg.model.init_from)
            what = "every layer, their head included" if model.criterion.classification else "all but the head"
            log.info("model.init_from: %d tensors of the authors' ECCV16 (%s; model.init not run)", len(tensors), what)
        elif init_from := cfg.model.get("init_from"):  # another run's weights: they take precedence over model.init
            tensors = load_body_weights(model, init_from, state=init_state)
            log.info(
                "model.init_from: %d tensors from %s (all but the head; model.init not run)", len(tensors), init_from
            )
        elif init == "kmeans" and ckpt_path:
            log.info("model.init=kmeans: not rerun, the weights come from ckpt_path=%s", ckpt_path)
        elif init == "kmeans" and trainer.global_rank == 0:  # DDP broadcasts rank 0's weights when it wraps the model
            data_dependent_init(cfg, model, datamodule, trainer.strategy.root_device)
        del init_state  # copied into the network: free the file's tensors before training
        # in a multirun, sweeps.job_guard (on main) makes DDP ranks > 0 rerun this one job, not the sweep
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer


@command("train")
@job_guard  # multiruns: a failing job is recorded (error.txt, result.json) and the sweep goes on
def main(cfg: DictConfig) -> float | None:
    trainer = train(cfg)
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "")
    return None if metric is None else float(metric)


if __name__ == "__main__":
    main()
