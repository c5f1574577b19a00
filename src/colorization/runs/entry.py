"""The one entry of every command: config location, resolvers, one-line errors."""

from __future__ import annotations

import difflib
import functools
import itertools
import logging
import netrc
import os
import shutil
import sys
import uuid
from datetime import datetime
from pathlib import Path

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from colorization.color.decode import STRIP_TEMPERATURES
from colorization.color.reference import ReferenceError
from colorization.errors import ConfigError
from colorization.runs.sweeps import sweep_group, sweep_job_name


def _run_id() -> str:
    """Unique per run, even for runs started in the same second; the same in every process of a job that
    torchrun or SLURM srun started (each process composes its own config: they must agree on one run dir)."""
    if os.environ.get("COLORIZATION_RUN_ID"):
        return os.environ["COLORIZATION_RUN_ID"]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{uuid.uuid4().hex[:6]}"


RUN_ID = _run_id()


def config_dir() -> str:
    """The Hydra configs: shipped inside the wheel, or the repository's conf/ in an editable install."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parents[1] / "conf")


def wandb_offline() -> bool:
    """Offline unless credentials exist, so W&B never prompts; WANDB_MODE still wins."""
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"] != "online"
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def loader_workers(most: int = 8) -> int:
    """``${loader_workers:8}``: loader processes per rank, at most ``most``, at most the CPUs this process may use
    divided by the ranks on this node (torchrun / SLURM say how many); at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    declared = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or "1"
    local_ranks = int("".join(itertools.takewhile(str.isdigit, declared)) or 1)  # SLURM may write "4(x2)"
    return max(1, min(int(most), cpus // max(1, local_ranks)))


def register_resolvers() -> None:
    resolvers = {
        "loader_workers": loader_workers,
        "run_id": lambda: RUN_ID,
        "wandb_offline": wandb_offline,
        "sweep_group": sweep_group,  # W&B group / name of a multirun job (None outside multiruns)
        "sweep_job_name": sweep_job_name,
        "negate": lambda value: not value,
        "strip_temperatures": lambda: list(STRIP_TEMPERATURES),  # the paper's strip, one fact in color.decode
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


# Lightning's start-up lines that are not the user's business: the accelerators it did not find, its adverts, the
# seed (in the config already). hydra.verbose=true (Hydra's own switch) shows them.
LIGHTNING_NOISE = ("GPU available", "TPU available", "HPU available", "💡 Tip", "Seed set to", "`Trainer(val_check_interval")


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_NOISE)


def verbose() -> bool:
    """``hydra.verbose`` (true, or a list of loggers) in a Hydra app; COLORIZATION_VERBOSE=1 anywhere."""
    from hydra.core.hydra_config import HydraConfig

    if os.environ.get("COLORIZATION_VERBOSE") == "1":
        return True
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def quiet_console() -> None:
    if verbose():
        return
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        found = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in found.filters):
            found.addFilter(_DropLightningNoise())


def command_line(name: str) -> str | None:
    """This run's command as typed (``python -m colorization.<name> key=value ...``); None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return " ".join([f"python -m colorization.{name}", *HydraConfig.get().overrides.task])


def command(config_name: str):
    """The one entry of every command (``python -m colorization.<command>``): the resolvers registered, Hydra's main
    over ``conf/<config_name>.yaml``, and a bad command line or value ended in one line with exit status 2."""

    def decorate(fn):
        import hydra

        main = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(one_line_errors(fn))

        @functools.wraps(main)
        def entry(*args, **kwargs):
            register_resolvers()
            return one_line_hydra_errors(main)(*args, **kwargs)

        return entry

    return decorate


def one_line_errors(fn):
    """Configuration and reference-file errors end the program with one line naming the key."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_console()
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ReferenceError, InstantiationException) as err:
            cause = err
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__  # hydra.utils.instantiate wraps what the constructor raised
            if not isinstance(cause, ConfigError | ReferenceError | ValueError):
                raise
            print(f"error: {cause}", file=sys.stderr)
            remove_empty_run_dir()
            sys.exit(2)

    return wrapper


def remove_empty_run_dir() -> None:
    """A run stopped by a one-line error before any work leaves no folder behind: only Hydra's record of its config
    (``.hydra/``) and its log were in it. Anything else (a checkpoint, W&B files, a sweep's error.txt) keeps it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= {".hydra", f"{hc.job.name}.log"}:
        shutil.rmtree(out, ignore_errors=True)


def one_line_hydra_errors(hydra_main):
    """Around ``@hydra.main``: a bad command line (unknown key, unknown group option, unparsable override)
    ends in one line naming the key, exit status 2, where Hydra prints several.

    HYDRA_FULL_ERROR=1 (Hydra's documented switch) makes Hydra raise instead of print, so the error can be
    caught here; errors raised inside the job then show their full traceback. Set by the user, it is kept.
    """

    @functools.wraps(hydra_main)
    def wrapper(*args, **kwargs):
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return hydra_main(*args, **kwargs)
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return hydra_main(*args, **kwargs)
        except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
            print(f"error: {hydra_error_line(err)}", file=sys.stderr)
            sys.exit(2)
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)

    return wrapper


def hydra_error_line(err: Exception) -> str:
    """One line for a Hydra composition error, naming the key."""
    cause = err.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and getattr(cause, "full_key", None):
        key, parent = cause.full_key, getattr(cause, "parent_node", None)
        prefix, _, name = key.rpartition(".")
        close = difflib.get_close_matches(name, [str(k) for k in parent.keys()], n=1) if parent is not None else []
        hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}? " if close else ""
        return f"{key}: no such config key ({hint}a new key needs a '+': +{key}=VALUE)"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, MissingConfigException) and err.options:
        options = [o for o in err.options if not o.startswith("_")]  # data/_base, loss/_base: shared keys, not options
        return f"{lines[0]} (options: {', '.join(options)})"
    if isinstance(err, OverrideParseException):
        return ": ".join(lines[:2])
    return lines[0] if lines else type(err).__name__
