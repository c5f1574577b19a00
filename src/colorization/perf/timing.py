"""Clocks for the benchmark: the matmul peak, the training loop's data waits, a window of steps, the machine."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
import torch.utils.benchmark as benchmark
from lightning.pytorch.profilers import Profiler


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


