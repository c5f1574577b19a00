"""Learning-rate schedules of the authors' Caffe solvers, as torch schedulers (stepped once per iteration)."""

from __future__ import annotations

import bisect

import torch


class PiecewiseConstantLR(torch.optim.lr_scheduler.LRScheduler):
    """lr = base lr x ``factors[i]`` from iteration ``milestones[i - 1]`` on (``factors[0]`` before the first).

    Caffe's "step" policy (lr x gamma every stepsize iterations) over a run of fixed length is this with
    ``gamma``: factors 1, gamma, gamma^2, ...; the AlexNet solvers' four stages (solver0..3.prototxt, each a
    new base lr) are it with explicit ``factors``. Give one of the two."""

    def __init__(self, optimizer, milestones, factors=None, gamma=None, last_epoch: int = -1):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"model.scheduler.milestones={milestones} must be increasing")
        if (factors is None) == (gamma is None):
            raise ValueError("model.scheduler: give either factors (one more than milestones) or gamma")
        factors = [gamma**i for i in range(len(milestones) + 1)] if factors is None else [float(f) for f in factors]
        if len(factors) != len(milestones) + 1:
            raise ValueError(
                f"model.scheduler: {len(factors)} factors for {len(milestones)} milestones (need one more)"
            )
        self.milestones, self.factors = milestones, factors
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = self.factors[bisect.bisect_right(self.milestones, self.last_epoch)]
        return [base * factor for base in self.base_lrs]
