"""How many of the package's files and functions one training batch crosses, traced (sys.setprofile).

    python experiments/structure/trace_step.py [key=value ...]

Runs ``python -m colorization.train experiment=rebalanced`` (tiny: one loader process, no logger) in this
process and counts, per phase, the package's source files entered, its functions called, and the returns to
a file already left (each distinct B -> A after A -> B: the reader goes back to a file they had left):
- setup: from the start to the first training batch (config, data, prior, model, trainer);
- train: one steady training step (from the end of batch 0 to the end of batch 1: the next batch's fetch,
  transfer, targets, forward, loss, backward, optimizer, the callbacks' batch hooks);
- val: one validation batch (same bounds); step: train and val together; and the training step without callbacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L

import colorization

PACKAGE = str(Path(colorization.__file__).parent)
PHASES = {"setup": [], "train": [], "val": []}  # each: the (file, function) of every package frame entered, in order
phase = "setup"


class PhaseMarks(L.Callback):
    """Switches the traced phase at the batch boundaries named above."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        global phase
        if phase == "setup":
            phase = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        global phase
        phase = "train" if batch_idx == 0 else None

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        global phase
        phase = "val" if batch_idx == 0 and not trainer.sanity_checking else None


def profile(frame, event, arg):
    if phase is None or event not in ("call", "return") or frame.f_code.co_name == "<module>":
        return  # imports are not the run's path
    if event == "return":  # control goes back to the caller: where the reader is now
        frame = frame.f_back
        if frame is None:
            return
    path = frame.f_code.co_filename
    if path.startswith(PACKAGE):
        PHASES[phase].append((path[len(PACKAGE) + 1 :], frame.f_code.co_qualname if event == "call" else None))


def counts(events: list) -> dict:
    files, functions, returns, current, left = [], set(), set(), None, set()
    for path, function in events:
        if function:
            functions.add((path, function))
        if path != current:
            if current is not None:
                left.add(current)
            if path in left:
                returns.add((current, path))  # each way back once: a loop over images is read once
            if path not in files:
                files.append(path)
            current = path
    return {"files": len(files), "functions": len(functions), "returns to a file already left": len(returns), "list": files}


def main() -> None:
    import tempfile

    from colorization.train import main as train_main

    cache = tempfile.mkdtemp()  # an empty cache: the prior is estimated in every trace, so runs compare

    sys.argv = [
        "colorization.train",
        "experiment=rebalanced",
        "logger=csv",
        "data.num_workers=0",
        "data.batch_size=2",
        "model.width=0.125",
        "trainer.max_steps=3",
        "trainer.val_check_interval=2",
        "+trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "+trainer.enable_progress_bar=false",
        f"+callbacks.trace._target_={__name__}.PhaseMarks",
        "hydra.run.dir=${paths.log_dir}/trace/${run_id:}",
        f"paths.cache_dir={cache}",
        *sys.argv[1:],
    ]
    sys.setprofile(profile)
    try:
        train_main()
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
    finally:
        sys.setprofile(None)
    phases = {**PHASES, "step (train + val)": PHASES["train"] + PHASES["val"]}
    phases["train, callbacks aside"] = [e for e in PHASES["train"] if not e[0].startswith("callbacks/")]
    for name, events in phases.items():
        found = counts(events)
        print(f"{name}: {found['files']} files, {found['functions']} functions, "
              f"{found['returns to a file already left']} returns to a file already left")
        print("  " + " ".join(found["list"]))


if __name__ == "__main__":
    main()
