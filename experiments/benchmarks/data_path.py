"""The data path, per loader worker: how many training images per second one worker makes from each source.

    python experiments/benchmarks/data_path.py                   # 400 ImageNet-sized photos, a few minutes
    python experiments/benchmarks/data_path.py --files 2000 --seconds 20

Makes ImageNet-sized JPEGs (500 x 375, quality 90) from real photos (random crops of scikit-image's sample photos,
resized), converts them with `python -m colorization.shards` (JPEG quality 90 4:4:4, the default, and the other
stored formats for the trade), then times, in this one process on one thread (as a loader worker runs: the
DataLoader gives each worker one torch thread), the training loader of the DataModule with num_workers=0 (its
item, crop and flip, collate into batches of 40):

- bare decoding of the stored item (torchvision's decode_jpeg of the bytes already in memory): the limit;
- `data=shards` (LitData's reader, the decode, a 176 crop and flip);
- `data=folder` on the same photos as files (PIL's decode, resize to 256, crop, flip), and bare decoding of them.

Each is timed in interleaved passes (several passes each, the median kept) so a busy neighbour on the machine
affects all alike. Prints a table and writes results/data_path.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 3800  # images/s: the ECCV16 step alone on one H100 (bf16, channels_last, compiled, batch 256)


def make_photos(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 500 x 375 JPEGs (quality 90, 4:2:0 as most of ImageNet) of random crops of real photos."""
    import numpy as np
    import skimage
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    files = sorted(root.glob("*.jpg"))
    if len(files) == n:
        return files
    rng = np.random.default_rng(seed)
    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in names]
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize((500, 375), Image.BICUBIC)
        crop.save(root / f"{i:05d}.jpg", quality=90)
    return sorted(root.glob("*.jpg"))


def convert(photos: Path, out: Path, fmt: str, quality: int, subsampling: int) -> Path:
    """The project's conversion (its Python entry, the same as `python -m colorization.shards`)."""
    from hydra import compose, initialize_config_dir

    from colorization.runs.entry import config_dir, register_resolvers
    from colorization.shards import convert as run

    if (out / "train" / "index.json").is_file():
        return out
    register_resolvers()
    overrides = ["data=folder", f"data.root={photos}", "data.val_size=8", f"output={out}", f"format={fmt}",
                 f"quality={quality}", f"subsampling={subsampling}", f"hydra.run.dir={out.parent / 'hydra'}"]  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="shards", overrides=overrides)
    run(cfg)
    return out


def stored_bytes(split: Path) -> list:
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(split))
    return [dataset[i]["image"] for i in range(len(dataset))]


def loader_rate(datamodule, seconds: float) -> float:
    """Images/s of the DataModule's training loader (num_workers=0: item, crop, flip and collate, one thread)."""
    datamodule.setup("fit")
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in datamodule.train_dataloader():
            images += len(batch["image"])
            if time.perf_counter() - start >= seconds:
                break
    return images / (time.perf_counter() - start)


def decode_rate(payloads: list, seconds: float) -> float:
    import numpy as np
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [p if isinstance(p, np.ndarray) else torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for t in tensors:
            if isinstance(t, np.ndarray):
                torch.from_numpy(t).permute(2, 0, 1)  # raw: nothing to decode
            else:
                decode_jpeg(t, mode=ImageReadMode.RGB)
            images += 1
    return images / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=6.0, help="per timed pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/colorization_data_path"))
    args = parser.parse_args()

    import torch

    from colorization.data import FolderDataModule, ShardsDataModule

    torch.set_num_threads(1)  # one loader worker's share
    photo_dir = args.work / "photos"
    photos = make_photos(photo_dir, args.files)
    variants = {
        "jpeg q90 4:4:4 (default)": ("jpeg", 90, 444),
        "jpeg q90 4:2:0": ("jpeg", 90, 420),
        "raw uint8": ("raw", 90, 444),
    }
    shards = {name: convert(photo_dir, args.work / name.split(" (")[0].replace(" ", "_").replace(":", ""), *v)
              for name, v in variants.items()}  # fmt: skip
    common = dict(crop_size=176, resize=256, batch_size=40, num_workers=0, seed=0)
    sources = {
        f"shards, {name}": ShardsDataModule(root=str(path), **common)
        for name, path in shards.items()
    }
    sources["folder (500 x 375 JPEG files)"] = FolderDataModule(root=str(photo_dir), val_size=8, **common)
    payloads = {f"shards, {name}": stored_bytes(path / "train") for name, path in shards.items()}
    payloads["folder (500 x 375 JPEG files)"] = [f.read_bytes() for f in photos]

    rates: dict[str, dict[str, list[float]]] = {name: {"loader": [], "decode": []} for name in sources}
    for _ in range(args.passes):  # interleaved: every source timed in every pass
        for name, datamodule in sources.items():
            rates[name]["loader"].append(loader_rate(datamodule, args.seconds))
            rates[name]["decode"].append(decode_rate(payloads[name], args.seconds / 2))
    results = {}
    for name in sources:
        loader, decode = statistics.median(rates[name]["loader"]), statistics.median(rates[name]["decode"])
        disk = (
            sum(f.stat().st_size for f in photos)
            if name.startswith("folder")
            else sum(f.stat().st_size for f in (shards[name.removeprefix("shards, ")] / "train").glob("*.bin"))
        )
        count = len(photos) if name.startswith("folder") else len(payloads[name])
        results[name] = {
            "loader_img_s": loader,
            "bare_decode_img_s": decode,
            "of_decode_limit": loader / decode,
            "kb_per_image": disk / count / 1e3,
            "workers_for_3800": TARGET / loader,
            "passes": rates[name],
        }
    folder = results["folder (500 x 375 JPEG files)"]["loader_img_s"]
    for r in results.values():
        r["vs_folder"] = r["loader_img_s"] / folder
    meta = {
        "date": str(date.today()),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "command": " ".join(["python experiments/benchmarks/data_path.py", *sys.argv[1:]]),
        "files": args.files,
        "passes": args.passes,
        "seconds_per_pass": args.seconds,
    }
    lines = [
        f"# The data path per loader worker ({meta['date']}, {meta['machine']})",
        "",
        f"`{meta['command']}`: {args.files} photos of 500 x 375 (JPEG q90), one thread, the DataModule's training "
        "loader with num_workers=0 (item, crop 176, flip, collate into batches of 40); median of "
        f"{args.passes} interleaved passes of {args.seconds:.0f} s. Bare decode: the stored item's decoding alone "
        f"(raw: nothing to decode). Workers for {TARGET:,} img/s: the ECCV16 step alone on one H100 (bf16, "
        "channels_last, compiled, batch 256).",
        "",
        "| source | images/s per worker | bare decode (img/s) | of its decode limit | vs folder | kB per image "
        f"| workers for {TARGET:,} img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['loader_img_s']:,.0f} | {r['bare_decode_img_s']:,.0f} | {r['of_decode_limit']:.0%} "
            f"| {r['vs_folder']:.2f}x | {r['kb_per_image']:.1f} | {r['workers_for_3800']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "data_path.md").write_text(text)
    (HERE / "results" / "data_path.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
