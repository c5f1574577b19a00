"""Start-up on an ImageNet-shaped folder: seconds from `python -m colorization.train` to the first training step.

    python experiments/benchmarks/startup.py                      # 1,000 class folders: 50k and 200k files
    python experiments/benchmarks/startup.py --sizes 50 200 1280  # files per class (1280: ImageNet's 1.28 M)

Generates a tree of 1,000 class folders of small JPEGs (the same 1 kB photo crop in every file), then for each size
runs a 2-process CPU DDP training (trainer=ddp, gloo) to its first step twice: cold (no index: rank 0 walks the
folder and decodes the hold-out candidates, rank 1 waits for its index) and warm (the index of the first run read
by both ranks). Each rank writes the time of its first training step (FirstStep below); the walk alone is also
timed, the old way (Path.rglob with a stat per file, as this project listed before data.index) and the new one
(os.walk). Writes startup.md / startup.json next to this file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import lightning as L

HERE = Path(__file__).resolve().parent
CLASSES = 1000


class FirstStep(L.Callback):
    """Writes {rank: seconds since the epoch} of the first training step to $STARTUP_TIMES_DIR/rank<r>.json."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0 and batch_idx == 0:
            out = Path(os.environ["STARTUP_TIMES_DIR"])
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"t": time.time()}))


def make_tree(root: Path, per_class: int) -> int:
    """root/n<class>/<i>.JPEG, per_class files in each of CLASSES folders (kept when already complete)."""
    import numpy as np
    import skimage
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == str(per_class):
        return CLASSES * per_class
    shutil.rmtree(root, ignore_errors=True)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[::8, ::8][:48, :48])).save(buffer, "JPEG")
    data = buffer.getvalue()
    for c in range(CLASSES):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"n{c:08d}_{i}.JPEG").write_bytes(data)
    done.write_text(str(per_class))
    return CLASSES * per_class


def time_walks(root: Path) -> dict[str, float]:
    from colorization.data.sources import IMAGE_EXTENSIONS, _walk_images

    start = time.perf_counter()
    old = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    rglob = time.perf_counter() - start
    start = time.perf_counter()
    new = _walk_images(root)
    walk = time.perf_counter() - start
    assert old == new
    return {"rglob_with_stat_s": rglob, "os_walk_s": walk}


def first_step(root: Path, index: Path | None, work: Path, source: str = "folder") -> dict:
    """One 2-rank DDP run to its first step: wall seconds from the launch to each rank's first step."""
    times = work / "times"
    shutil.rmtree(times, ignore_errors=True)
    times.mkdir(parents=True)
    data = [f"data.index={index}"] if source == "folder" else []
    overrides = [
        f"data={source}",
        f"data.root={root}",
        *data,
        "data.crop_size=32",
        "data.resize=null",
        "data.batch_size=8",
        "data.num_workers=0",
        "model.width=0.125",
        "color.prior_images=64",  # the prior's sample is not what is measured here
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=1",
        "trainer.num_sanity_val_steps=0",
        "+trainer.limit_val_batches=0",
        "logger=csv",
        f"hydra.run.dir={work / 'run'}",
        "+callbacks.first_step._target_=startup.FirstStep",
    ]
    env = {
        **os.environ,
        "STARTUP_TIMES_DIR": str(times),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "COLORIZATION_LOG_DIR": str(work / "logs"),
    }
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "colorization.train", *overrides], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    ranks = {p.stem: json.loads(p.read_text())["t"] - start for p in sorted(times.glob("rank*.json"))}
    # each rank's listing of data.root (the index module logs it with its rank and seconds)
    listing = {}
    for line in (done.stdout + done.stderr).splitlines():
        found = re.search(r"data\.index: rank (\d+) (read|listed) \d+ files of (\S+) in ([\d.]+) s", line)
        if found and Path(found.group(3)) == root:
            listing[f"rank{found.group(1)}"] = {"how": found.group(2), "s": float(found.group(4))}
    return {"to_first_step_s": ranks, "listing": listing}


def make_shards(root: Path, out: Path) -> float:
    """`python -m colorization.shards` of the tree (kept when already there); returns the seconds it took."""
    if (out / "train" / "index.json").is_file():
        return float("nan")
    start = time.perf_counter()
    command = [sys.executable, "-m", "colorization.shards", "data=folder", f"data.root={root}", "data.resize=null",
               f"output={out}", "overwrite=true", f"hydra.run.dir={out.parent / 'shards_run'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="files per class folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/colorization_startup"))
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--shards", action="store_true", help="also convert each tree to shards and start from them")
    args = parser.parse_args()
    results = []
    for per_class in args.sizes:
        root = args.work / f"tree_{per_class}"
        start = time.perf_counter()
        files = make_tree(root, per_class)
        print(f"{files} files in {CLASSES} class folders ({time.perf_counter() - start:.0f} s to write)", flush=True)
        walks = time_walks(root)
        index = args.work / f"index_{per_class}.json"
        index.unlink(missing_ok=True)
        for name in list(index.parent.glob(f"{index.stem}.holdout-*.json")):
            name.unlink()
        cold = first_step(root, index, args.work)
        warm = first_step(root, index, args.work)
        if args.shards:
            shards = args.work / f"shards_{per_class}"
            convert_s = make_shards(root, shards)
            from_shards = first_step(shards, None, args.work, "shards")["to_first_step_s"]
        row = {
            "files": files,
            **walks,
            "cold": cold["to_first_step_s"],
            "warm": warm["to_first_step_s"],
            "cold_listing": cold["listing"],
            "warm_listing": warm["listing"],
            **({"shards_convert_s": convert_s, "shards": from_shards} if args.shards else {}),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "date": str(date.today()),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "python": sys.version.split()[0],
    }
    lines = [
        f"# Start-up on an ImageNet-shaped folder ({meta['date']}, {meta['machine']})",
        "",
        "Seconds from launching `python -m colorization.train data=folder trainer=ddp trainer.devices=2` (CPU, gloo) "
        "to each rank's first training step; cold: no index yet (rank 0 walks and writes it, rank 1 waits for it); "
        "warm: the index read by both. The walk alone: the old listing (Path.rglob, a stat per file) and the new one.",
        "",
        "| files | old walk (s) | new walk (s) | listing, cold: rank 0 / 1 (s) | listing, warm: rank 0 / 1 (s) "
        "| to first step, cold: rank 0 / 1 (s) | to first step, warm: rank 0 / 1 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for listing in (r["cold_listing"], r["warm_listing"]):
            cells.append(" / ".join(f"{v['s']:.2f} ({v['how']})" for _, v in sorted(listing.items())))
        for steps in (r["cold"], r["warm"]):
            cells.append(" / ".join(f"{v:.1f}" for v in steps.values()))
        lines.append(
            f"| {r['files']:,} | {r['rglob_with_stat_s']:.2f} | {r['os_walk_s']:.2f} | " + " | ".join(cells) + " |"
        )
    if any("shards" in r for r in results):
        lines += ["", "From shards of the same tree (`python -m colorization.shards`, then `data=shards`; their index.json "
                  "is read by each rank, no listing and no hold-out to decode):", "",
                  "| files | conversion, 2 processes (s) | to first step: rank 0 / 1 (s) |", "|---|---|---|"]  # fmt: skip
        for r in results:
            if "shards" in r:
                steps = " / ".join(f"{v:.1f}" for v in r["shards"].values())
                lines.append(f"| {r['files']:,} | {r['shards_convert_s']:.0f} | {steps} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.md").write_text(text)
    (HERE / "results" / "startup.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
