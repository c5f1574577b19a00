"""Multiruns that survive their jobs: one failing job is recorded and the sweep goes on.

``python -m colorization.train -m experiment=l2,rebalanced`` runs every job in its own directory
(``logs/train/multiruns/<id>/<num>_<swept values>/``) with its own W&B run, grouped by sweep and named by
its swept values. Each job leaves ``result.json`` (status, metric, value, overrides) and, when it failed,
``error.txt`` (the traceback); at the end ``summary.md`` / ``summary.json`` in the sweep directory list
every job, and the program exits with status 1 if any job failed.

DDP inside a multirun: Lightning restarts the ranks > 0 of a DDP job as
``python -m <main> <sys.argv[1:]> hydra.run.dir=<HydraConfig run.dir>`` (``_hydra_subprocess_cmd`` in
lightning/fabric/strategies/launchers/subprocess_script.py). Under ``-m`` that command line still holds
``-m`` and the sweep's lists, and ``hydra.run.dir`` is not the job's directory, so each child would run
the whole sweep again somewhere else. While a job runs, ``job_guard`` therefore narrows ``sys.argv``
to the job's own overrides and points ``hydra.run.dir`` at the job's directory; after the job it restores
the environment (Lightning leaves LOCAL_RANK, WORLD_SIZE, MASTER_PORT behind, which would make the next
job skip launching its ranks and wait for ones that never come) and destroys the process group.
Under SLURM (submitit_slurm, one task per device) Lightning reads the ranks from SLURM and relaunches
nothing; under submitit_local (one process per device too) the ranks are exported from submitit's
job environment.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger(__name__)

RESULT_FILE, ERROR_FILE = "result.json", "error.txt"


def multirun_config() -> DictConfig | None:
    """The ``hydra`` node of the running job when it is one job of a multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return hc if hc.mode == RunMode.MULTIRUN else None


def sweep_group() -> str | None:
    """W&B group of a multirun job: the task and the sweep directory's id (None outside multiruns)."""
    hc = multirun_config()
    return None if hc is None else f"{hc.job.name}_{Path(hc.sweep.dir).name}"


def swept_keys(hc: DictConfig) -> set[str]:
    """The keys a sweep varies: ``hydra.sweeper.params`` and the sweep overrides of its command line
    (read back from multirun.yaml, which the basic sweeper writes to the sweep directory)."""
    keys = set((hc.sweeper.get("params") or {}).keys())
    launch = Path(hc.sweep.dir) / "multirun.yaml"
    if launch.is_file():
        overrides = OmegaConf.load(launch).hydra.overrides.task
        keys |= {
            o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides)) if o.is_sweep_override()
        }
    return keys


def sweep_job_name(sep: str = ",") -> str | None:
    """W&B name of a multirun job: its values of the swept keys (e.g. ``experiment=l2``), else all its overrides
    (hydra.job.override_dirname), else job<num>; None outside multiruns."""
    hc = multirun_config()
    if hc is None:
        return None
    keys = swept_keys(hc)
    parsed = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    swept = [f"{o.key_or_group}={o.get_value_element_as_str()}" for o in parsed if o.key_or_group in keys]
    name = sep.join(swept) or hc.job.override_dirname or f"job{hc.job.num}"
    return name.replace("/", "_")  # also names the job's directory: no nesting


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@contextmanager
def _isolated_job(hc: DictConfig):
    """Run one multirun job in-process: DDP children join this job; nothing leaks into the next one."""
    argv, environ = list(sys.argv), dict(os.environ)
    run_dir = hc.run.dir
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with read_write(hc):
        hc.run.dir = hc.runtime.output_dir
    if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
        # submitit's local executor started one process per rank: tell torch.distributed (and Lightning) which
        # (SLURM needs nothing: Lightning reads the SLURM variables)
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    try:
        yield
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        with read_write(hc):
            hc.run.dir = run_dir
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _write_result(hc: DictConfig | None, cfg: DictConfig, result: dict[str, Any]) -> None:
    if hc is None or not _is_rank_zero():
        return
    out = Path(hc.runtime.output_dir)
    result = {
        "job": hc.job.num,
        "overrides": list(hc.overrides.task),
        "output_dir": str(out),
        "metric": cfg.get("optimized_metric"),
        **result,
    }
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")


def job_guard(task):
    """Wrap a Hydra task ``cfg -> float | None``. Outside multiruns it changes nothing (errors end the program).

    In a multirun a failing job is logged, its traceback written to ``error.txt`` in its directory, and it
    returns NaN (sweepers such as Optuna then record a failed trial and go on); a missing metric returns NaN too.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> float | None:
        hc = multirun_config()
        if hc is None:
            return task(cfg)
        try:
            with _isolated_job(hc):
                value = task(cfg)
        except Exception as err:  # noqa: BLE001 - a sweep reports its failed jobs instead of dying with them
            log.error("job %s (%s) failed: %s: %s", hc.job.num, hc.job.override_dirname, type(err).__name__, err)
            if _is_rank_zero():
                (Path(hc.runtime.output_dir) / ERROR_FILE).write_text(traceback.format_exc())
            _write_result(hc, cfg, {"status": "failed", "value": None, "error": f"{type(err).__name__}: {err}"})
            return math.nan
        if value is None or not math.isfinite(value):
            log.warning("job %s: metric %s is %s", hc.job.num, cfg.get("optimized_metric"), value)
            _write_result(hc, cfg, {"status": "no_metric", "value": None})
            return math.nan
        _write_result(hc, cfg, {"status": "ok", "value": float(value)})
        return float(value)

    return wrapper


def read_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job of a sweep directory (one with a .hydra folder): its result.json, or a 'crashed' row."""
    rows = []
    for job_dir in sorted(p.parent for p in Path(sweep_dir).rglob(".hydra") if p.parent != Path(sweep_dir)):
        result = job_dir / RESULT_FILE
        if result.is_file():
            rows.append(json.loads(result.read_text()))
        else:
            rows.append({"job": job_dir.name.split("_")[0], "output_dir": str(job_dir), "status": "crashed"})
    return sorted(rows, key=lambda r: int(r["job"]) if str(r["job"]).isdigit() else -1)


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    metric = next((r["metric"] for r in rows if r.get("metric")), "metric")
    lines = [f"| job | overrides | status | {metric} | error |", "|---|---|---|---|---|"]
    for r in rows:
        value = "" if r.get("value") is None else f"{r['value']:.6g}"
        overrides = " ".join(r.get("overrides") or [])
        error = (r.get("error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['job']} | {overrides} | {r['status']} | {value} | {error} |")
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write summary.md / summary.json to the sweep directory and log them.

    ``exit_on_failure``: end with status 1 when any job failed (after every job ran and was summarized).
    """

    def __init__(self, exit_on_failure: bool = True):
        self.exit_on_failure = exit_on_failure

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A task without ``job_guard`` (it wrote no result.json) gets one from Hydra's own record of the job."""
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN or (Path(hc.runtime.output_dir) / RESULT_FILE).is_file():
            return
        value = job_return._return_value  # the exception when the job failed
        if job_return.status == JobStatus.COMPLETED:
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            _write_result(hc, config, {"status": "ok", "value": float(value) if number else None})
        else:
            _write_result(hc, config, {"status": "failed", "value": None, "error": f"{type(value).__name__}: {value}"})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = read_results(sweep_dir)
        table = summary_markdown(rows)
        (sweep_dir / "summary.md").write_text(table)
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        failed = [r for r in rows if r["status"] in ("failed", "crashed")]
        log.info("sweep %s: %d jobs, %d failed\n%s", sweep_dir, len(rows), len(failed), table)
        if failed:
            log.error("%d of %d jobs failed: see %s", len(failed), len(rows), sweep_dir / "summary.md")
            if self.exit_on_failure:
                raise SystemExit(1)
