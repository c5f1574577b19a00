"""Multiruns: every job in its own directory, a failing job recorded without taking the others down, a summary;
DDP jobs relaunch their ranks into their own directory; Optuna search and the submitit launchers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import fields

import pytest
import yaml

from colorization.runs.sweeps import SweepSummary, read_results, summary_markdown
from helpers.config import TINY, compose
from helpers.multirun import job_dirs, run_train, sweep_dir

FAST = [*TINY, "+trainer.fast_dev_run=true"]


def _needs(*modules: str) -> None:
    """Skip unless the optional `sweep` extra is installed (pip install "colorization[sweep]")."""
    for module in modules:
        pytest.importorskip(module, reason=f"{module}: the optional `sweep` extra is not installed")


def test_a_failing_job_is_recorded_and_the_others_keep_their_results(tmp_path, monkeypatch):
    # job 1 fails inside trainer.fit (configure_optimizers: torch.optim.Adam refuses lr < 0), after its logger started
    code = run_train(["-m", *FAST, "model.optimizer.lr=0.001,-1", f"paths.log_dir={tmp_path}"], monkeypatch)
    assert code == 1, "a sweep with a failed job ends with status 1, after all jobs ran"
    sweep = sweep_dir(tmp_path)
    ok, failed = job_dirs(sweep)
    # directories named by the swept values only; each job ran its own values there
    assert ok.name == "0_model.optimizer.lr=0.001" and failed.name == "1_model.optimizer.lr=-1"
    for job, lr in ((ok, 0.001), (failed, -1)):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        runtime = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
        assert config["model"]["optimizer"]["lr"] == lr and runtime["output_dir"] == str(job)

    result = json.loads((ok / "result.json").read_text())
    assert result["status"] == "ok" and result["metric"] == "val/loss"
    assert math.isfinite(result["value"]) and result["value"] > 0
    assert (ok / ".hydra" / "config.yaml").is_file() and (ok / "train.log").is_file(), "the good job's files are kept"

    bad = json.loads((failed / "result.json").read_text())
    assert bad["status"] == "failed" and bad["value"] is None and "learning rate" in bad["error"]
    assert "Traceback" in (failed / "error.txt").read_text()

    summary = json.loads((sweep / "summary.json").read_text())
    assert [(r["job"], r["status"]) for r in summary] == [(0, "ok"), (1, "failed")]
    table = (sweep / "summary.md").read_text()
    assert "| 1 | " in table and "| failed |" in table and f"{result['value']:.6g}" in table


def test_summary_marks_a_job_that_left_no_result_as_crashed(tmp_path):
    for name, result in (("0_a=1", {"job": 0, "status": "ok", "value": 1.5, "metric": "val/loss"}), ("1_a=2", None)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        if result:
            (tmp_path / name / "result.json").write_text(json.dumps(result))
    rows = read_results(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [(0, "ok"), ("1", "crashed")]
    assert summary_markdown(rows).splitlines()[0] == "| job | overrides | status | val/loss | error |"


def test_jobs_of_other_entry_points_get_a_result_from_hydras_record(tmp_path):
    """An entry point without job_guard still gets result.json rows (and no false 'crashed' in the summary)."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    def job(num, status, value):
        out = tmp_path / f"{num}_x={num}"
        (out / ".hydra").mkdir(parents=True)
        hydra = {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(out)}, "job": {"num": num}}
        config = OmegaConf.create({"hydra": {**hydra, "overrides": {"task": [f"x={num}"]}}, "optimized_metric": "m"})
        SweepSummary().on_job_end(config, JobReturn(status=status, _return_value=value))

    job(0, JobStatus.COMPLETED, 2.5)
    job(1, JobStatus.COMPLETED, None)
    job(2, JobStatus.FAILED, ValueError("bad x"))
    rows = read_results(tmp_path)
    assert [(r["job"], r["status"], r["value"]) for r in rows] == [(0, "ok", 2.5), (1, "ok", None), (2, "failed", None)]
    assert rows[2]["error"] == "ValueError: bad x" and rows[0]["overrides"] == ["x=0"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ddp_jobs_of_a_multirun_relaunch_their_ranks_into_their_own_directory(tmp_path):
    """Two DDP jobs (2 CPU processes each) in one sweep: each job's rank 1 runs that job, in that job's directory,
    and the second job does not inherit the first one's distributed environment."""
    args = [*TINY, "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "colorization.train", "-m", *args, "loss.lam=0.25,0.5", f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=1700,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "train" / "runs").exists(), "no rank started a run of its own"
    jobs = job_dirs(sweep_dir(tmp_path))
    assert [p.name for p in jobs] == ["0_loss.lam=0.25", "1_loss.lam=0.5"]
    for job in jobs:
        assert (job / "train_ddp_process_1.log").is_file(), "rank 1 ran in the job's directory"
        assert json.loads((job / "result.json").read_text())["status"] == "ok"
        assert (job / "checkpoints" / "last.ckpt").is_file()


# ---- Optuna ------------------------------------------------------------------------------------------
def test_optuna_search_composes(tmp_path):
    _needs("optuna", "hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from colorization.runs.entry import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("train", ["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert cfg.optimized_metric == "val/loss" and sweeper.direction == "minimize"
    assert set(sweeper.params) == {"model.optimizer.lr", "model.optimizer.weight_decay"}


def test_optuna_search_optimizes_the_named_metric(tmp_path, monkeypatch):
    _needs("optuna", "hydra_plugins.hydra_optuna_sweeper")
    args = [
        *FAST,
        "logger=csv",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "optimized_metric=val/ce",
        f"paths.log_dir={tmp_path}",
    ]
    assert run_train(args, monkeypatch) == 0
    sweep = sweep_dir(tmp_path)
    results = [json.loads((job / "result.json").read_text()) for job in job_dirs(sweep)]
    assert len(results) == 2 and all(r["status"] == "ok" and r["metric"] == "val/ce" for r in results)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(r["value"] for r in results))
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.optimizer.weight_decay"}
    # each trial ran with the parameters Optuna chose (and its directory is named by them)
    for job in job_dirs(sweep):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert f"model.optimizer.lr={config['model']['optimizer']['lr']}" in job.name
        assert 1e-5 <= config["model"]["optimizer"]["lr"] <= 1e-3


# ---- submitit ----------------------------------------------------------------------------------------
def _hydra_config(tmp_path, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from colorization.runs.entry import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("train", overrides, return_hydra_config=True)


def test_slurm_launcher_requests_what_the_trainer_uses(tmp_path):
    cfg = _hydra_config(tmp_path, ["hydra/launcher=submitit_slurm", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    local = _hydra_config(tmp_path, ["hydra/launcher=submitit_local", "trainer.devices=2"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and (local.gpus_per_node, local.tasks_per_node) == (2, 2)
    assert compose(["trainer.num_nodes=2"], tmp_path).trainer.num_nodes == 2


def test_launcher_files_hold_every_key_of_the_plugins_schema():
    """Our files replace the plugin's entries: they must list every key its launcher expects."""
    _needs("submitit", "hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.hydra_submitit_launcher import config

    from colorization.runs.entry import config_dir

    for name, schema in (("submitit_slurm", config.SlurmQueueConf), ("submitit_local", config.LocalQueueConf)):
        keys = set(yaml.safe_load(open(f"{config_dir()}/hydra/launcher/{name}.yaml")))
        assert keys == {f.name for f in fields(schema)}, name


def test_submitit_local_launcher_runs_the_jobs(tmp_path, monkeypatch):
    _needs("submitit", "hydra_plugins.hydra_submitit_launcher")
    args = ["-m", "hydra/launcher=submitit_local", *FAST, "logger=csv", "loss=l2", f"paths.log_dir={tmp_path}"]
    assert run_train(args, monkeypatch) == 0
    sweep = sweep_dir(tmp_path)
    (job,) = job_dirs(sweep)
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "ok" and math.isfinite(result["value"])
    assert list((sweep / ".submitit").glob("*/*_log.out")), "the job ran through submitit"
    assert json.loads((sweep / "summary.json").read_text())[0]["status"] == "ok"
