"""Pre-resized image shards: written once by ``python -m colorization.shards``, streamed by ``data=shards``.

The engine is LitData (``litdata.optimize`` writes chunks and their ``index.json``; ``StreamingDataset`` and
``StreamingDataLoader`` read them from a local directory or an object store, split them over DDP ranks and loader
workers, shuffle by chunk and within chunks, and save their position in a ``state_dict``). The layout:

    ROOT/train/index.json, chunk-0-*.bin     the training images, in a seeded random order
    ROOT/val/index.json, chunk-0-*.bin       the held-out validation images (the source's own split)

Each item is {"image": JPEG bytes (or raw uint8 H x W x 3), "label": int (-1 without labels), "name": the source
file or example (UTF-8 bytes), "index": its position in the source's split, "height", "width"}, stored with its shorter side at ``resize`` (the
authors' 256), so a worker only decodes a 256-px JPEG and cuts a crop. Each ``index.json`` also holds, under
"colorization", what this project needs to read it: resize, format, quality, class names, counts and the files
skipped as unreadable at conversion (named there, never met at training).

Conversion runs in parts of ``part_size`` images, each one ``litdata.optimize`` call into ROOT/.parts/; a part is
done when its index.json exists, so an interrupted conversion, run again, redoes at most the parts it was in.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import litdata
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.processing.utilities import read_index_file_content
from litdata.streaming import downloader as litdata_downloader
from litdata.streaming.resolver import _resolve_dir
from litdata.utilities.env import _DistributedEnv
from torchvision.io import ImageReadMode, decode_jpeg

from colorization.data.crops import Crop, item_rng
from colorization.data.datasets import ResizeAtLeast
from colorization.data.image_files import BadImageError, load_image
from colorization.data.loaders import TakenPosition
from colorization.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
FORMATS = ("jpeg", "raw")
META_KEY = "colorization"  # our part of each split's index.json
NO_LABEL = -1


# ---- reading an index, local or remote, without building a dataset (rank checks run before DDP starts) ----------
def split_url(root: str, split: str) -> str:
    return f"{str(root).rstrip('/')}/{split}"


def is_remote(root: str) -> bool:
    return "://" in str(root)


def read_index(root: str, split: str, storage_options: dict | None = None) -> dict:
    """A split's ``index.json`` (LitData's, with our "colorization" part); a one-line error when there is none."""
    if not is_remote(root) and not Path(root).expanduser().is_dir():
        raise ConfigError(f"data.root={root}: no such directory (make shards with python -m colorization.shards)")
    url = split_url(root if is_remote(root) else str(Path(root).expanduser()), split)
    index = read_index_file_content(_resolve_dir(url), storage_options or {})
    if index is None or META_KEY not in index:
        raise ConfigError(
            f"data.root={root}: no shards index at {url}/index.json (or it could not be read): make shards with "
            "python -m colorization.shards, or check data.storage_options for a bucket"
        )
    return index


def item_count(index: dict) -> int:
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


# ---- reading items -----------------------------------------------------------------------------------------------
# LitData fetches object-store chunks with obstore, which refuses plain-http endpoints (a local MinIO, a test server)
# unless told; boto3, which it uses for the index, accepts them. https endpoints are unaffected.
litdata_downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True
# torchvision warns on every decode_jpeg call that TorchCodec will take over its decoders: once per image here
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")


def decode_stored(image, name: str) -> torch.Tensor:
    """A stored image (JPEG bytes or an H x W x 3 uint8 array) -> uint8 (3, H, W)."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(image).permute(2, 0, 1)
    try:
        return decode_jpeg(torch.frombuffer(bytearray(image), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as err:  # a damaged chunk: the conversion wrote only images that decoded
        raise BadImageError(f"{name}: {err} (in the shards: convert them again)", name) from err


class ShardImages(StreamingDataset):
    """A LitData ``StreamingDataset`` of one split's stored images -> {"image": uint8 crop, "label"} (or, with
    ``encoded``, {"data": JPEG bytes, "crop": plan, "file"} for ``data.gpu_decode``). Item i of epoch e is cut with
    ``item_rng(seed, e, i)``: LitData gives its global index and epoch in every worker, and restores both."""

    def __init__(
        self,
        split_dir: str,
        transform,
        seed: int = 0,
        shuffle: bool = False,
        encoded: bool = False,
        storage_options: dict | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
    ):
        self.options = dict(seed=seed, shuffle=shuffle, encoded=encoded, storage_options=storage_options,
                            cache_dir=cache_dir, max_cache_size=max_cache_size)  # fmt: skip
        self.split_dir = split_dir
        url = split_dir if is_remote(split_dir) else str(Path(split_dir).expanduser())
        super().__init__(
            url,
            shuffle=shuffle,
            seed=seed,
            storage_options=storage_options or {},
            cache_dir=cache_dir,
            max_cache_size=max_cache_size,
            # one item at a time: LitData's "auto" deserializes a window of items per item (7x slower on raw arrays);
            # from a bucket it stays "auto": with 0, LitData 0.2.76 read empty items from its downloaded chunks
            batch_decode="auto" if is_remote(split_dir) else 0,
        )
        self.crops, self.item_seed, self.encoded = transform, seed, encoded  # (LitData applies a "transform" itself)

    def in_stored_order(self) -> ShardImages:
        """This split read by one process in its stored order (a seeded random order of the whole split, written by
        the conversion): its first n images are a uniform random sample of it, read sequentially (a bucket answers
        chunk by chunk, not image by image)."""
        whole = ShardImages(self.split_dir, self.crops, **{**self.options, "shuffle": False})
        whole.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
        return whole

    def __getitem__(self, index):
        if isinstance(index, tuple):  # (index, epoch): random access
            index, epoch = index
        else:  # LitData's ChunkedIndex while iterating; a plain int for random access
            epoch = self.current_epoch if hasattr(index, "chunk_index") else 0
        key = int(getattr(index, "index", index))
        stored = super().__getitem__(index)
        name = bytes(stored["name"]).decode()
        rng = item_rng(self.item_seed, epoch, key)
        item = {"label": stored["label"]}
        if self.encoded and not isinstance(stored["image"], np.ndarray):
            data = torch.frombuffer(bytearray(stored["image"]), dtype=torch.uint8)
            crop = self.crops.plan(stored["height"], stored["width"], rng)
            return {**item, "data": data, "crop": crop.as_tensor(), "file": name}
        image = self.crops(decode_stored(stored["image"], name), rng)
        if self.encoded:  # raw shards with data.gpu_decode: nothing to decode on the device
            size = image.shape[-1]
            return {**item, "data": image, "crop": Crop(size, size, 0, 0, size).as_tensor(), "file": name}
        return {**item, "image": image}


class ShardLoader(TakenPosition, StreamingDataLoader):
    """LitData's ``StreamingDataLoader`` with ``TakenPosition``: its state as of the batches trained on, per rank.
    LitData counts its epochs itself (one more per iteration started); a fresh epoch starts from the trainer's."""

    def __init__(self, *args, epoch_of=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_of = epoch_of
        self._reset_position()

    def __iter__(self):
        return self._positions(self._epoch())

    def _epoch(self):
        if not self.restore and self.epoch_of is not None:  # not resuming mid-epoch: LitData's epoch = trainer's + 1
            self.current_epoch = self.epoch_of()
        yield from StreamingDataLoader.__iter__(self)

    def _inner_state(self) -> dict:
        return StreamingDataLoader.state_dict(self)

    def _load_inner(self, inner: dict) -> None:
        StreamingDataLoader.load_state_dict(self, inner)

    def _next_epoch_marker(self) -> int:
        return self.current_epoch

    def _start_next_epoch(self, marker: int) -> None:
        self.current_epoch, self.restore = marker, False  # its next __iter__ starts epoch marker + 1


# ---- writing -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRef:
    """One image of a source, picklable for LitData's worker processes: a file path, or an example of a Hugging Face
    dataset (``hf``: path, name, data_dir, split, image column) read in the worker."""

    name: str
    index: int
    label: int = NO_LABEL
    path: str | None = None
    hf: tuple | None = None


@dataclass(frozen=True)
class Encoding:
    resize: int | None
    image_format: str = "jpeg"
    quality: int = 90
    subsampling: int = 0  # PIL's: 0 = 4:4:4 (chroma kept at full resolution: the targets are chroma), 2 = 4:2:0


@functools.cache
def _hf_dataset(path, name, data_dir, split):
    """A map-style Hugging Face split, opened once per worker process (memory-mapped by ``datasets``)."""
    from colorization.data.sources import load_hf_split

    return load_hf_split(path, name, data_dir, split, streaming=False)


def _read(ref: ImageRef) -> torch.Tensor:
    if ref.path is not None:
        return load_image(ref.path)
    from colorization.data.datasets import _decode, undecoded

    path, name, data_dir, split, column = ref.hf
    dataset = undecoded(_hf_dataset(path, name, data_dir, split), column)
    return _decode(dataset[ref.index][column], ref.name)


def encode(image: torch.Tensor, encoding: Encoding):
    """uint8 (3, H, W) -> what a shard stores: JPEG bytes of the given quality, or the H x W x 3 array."""
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    if encoding.image_format == "raw":
        return hwc
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(hwc).save(buffer, "JPEG", quality=encoding.quality, subsampling=encoding.subsampling)
    return buffer.getvalue()


def shard_item(ref: ImageRef, encoding: Encoding, skipped_dir: str) -> dict | None:
    """``litdata.optimize``'s function: one image read (with every check of the loader workers), resized, encoded.
    A bad file returns None (LitData writes nothing) and is written down with its reason in ``skipped_dir``."""
    try:
        image = _read(ref)
    except BadImageError as err:
        with open(Path(skipped_dir) / f"{os.getpid()}.txt", "a") as f:
            f.write(json.dumps({"name": ref.name, "reason": str(err)}) + "\n")
        return None
    if encoding.resize:
        image = ResizeAtLeast(1, encoding.resize)(image)
    return {
        "image": encode(image, encoding),
        "label": ref.label,
        "name": ref.name.encode(),  # bytes: LitData stores a str that names an existing image file as the file
        "index": ref.index,
        "height": int(image.shape[1]),
        "width": int(image.shape[2]),
    }


@contextlib.contextmanager
def _start_method_kept():
    """litdata.optimize sets the process-wide start method to spawn; put the caller's back."""
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)


def _read_skipped(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.txt")) for line in f.read_text().splitlines() if line]


def write_split(
    refs: list[ImageRef],
    out: Path,
    split: str,
    encoding: Encoding,
    meta: dict,
    workers: int,
    part_size: int,
    chunk_bytes: str = "64MB",
    progress=None,
) -> dict:
    """Write one split: refs in parts (resumable), then one LitData dataset in ``out/split``; returns its meta."""
    final = out / split
    if (final / "index.json").is_file():
        index = json.loads((final / "index.json").read_text())
        if progress is not None:
            progress.update(len(refs))
        return index[META_KEY]
    parts_dir = out / ".parts"
    parts = [refs[i : i + part_size] for i in range(0, len(refs), part_size)]
    for p, part in enumerate(parts):
        part_dir, skipped_dir = parts_dir / f"{split}-{p:05d}", parts_dir / f"{split}-{p:05d}.skipped"
        if not (part_dir / "index.json").is_file():  # not done (or interrupted): redo this part from scratch
            shutil.rmtree(part_dir, ignore_errors=True)
            shutil.rmtree(skipped_dir, ignore_errors=True)
            skipped_dir.mkdir(parents=True)
            started = time.monotonic()
            with _start_method_kept():
                litdata.optimize(
                    fn=_ShardFn(encoding, str(skipped_dir)),
                    inputs=part,
                    output_dir=str(part_dir),
                    chunk_bytes=chunk_bytes,
                    num_workers=max(1, min(workers, len(part))),
                    reorder_files=False,
                    keep_data_ordered=True,
                    verbose=False,
                )
            if not (part_dir / "index.json").is_file():  # every image of the part was bad: LitData writes nothing
                part_dir.mkdir(parents=True, exist_ok=True)
                (part_dir / "index.json").write_text(json.dumps({"chunks": [], "config": None}))
            log.info(
                "%s part %d/%d: %d images in %.0f s", split, p + 1, len(parts), len(part), time.monotonic() - started
            )
        if progress is not None:
            progress.update(len(part))
    return _merge_parts(out, split, len(parts), meta)


class _ShardFn:
    """``shard_item`` with its settings, as a picklable callable (LitData's workers are spawned processes)."""

    def __init__(self, encoding: Encoding, skipped_dir: str):
        self.encoding, self.skipped_dir = encoding, skipped_dir

    def __call__(self, ref: ImageRef) -> dict | None:
        return shard_item(ref, self.encoding, self.skipped_dir)


def _merge_parts(out: Path, split: str, n_parts: int, meta: dict) -> dict:
    """The parts' chunks moved (renamed) into one LitData dataset, index.json written last (atomically), parts removed.
    Idempotent: a merge interrupted and run again moves what is left."""
    parts_dir, final = out / ".parts", out / split
    final.mkdir(parents=True, exist_ok=True)
    chunks, config, skipped = [], None, []
    for p in range(n_parts):
        part_dir = parts_dir / f"{split}-{p:05d}"
        index = json.loads((part_dir / "index.json").read_text())
        config = config or index["config"]
        for chunk in index["chunks"]:
            name = f"chunk-0-{len(chunks)}.bin"
            if (part_dir / chunk["filename"]).is_file():
                os.replace(part_dir / chunk["filename"], final / name)
            chunks.append({**chunk, "filename": name})
        skipped += _read_skipped(parts_dir / f"{split}-{p:05d}.skipped")
    if not chunks:
        raise ConfigError(f"{split}: none of the images could be read ({len(skipped)} skipped); no shards written")
    meta = {**meta, "split": split, "images": sum(c["chunk_size"] for c in chunks), "skipped": skipped}
    tmp = final / "index.json.tmp"
    tmp.write_text(json.dumps({"chunks": chunks, "config": config, META_KEY: meta}))
    os.replace(tmp, final / "index.json")
    for p in range(n_parts):
        shutil.rmtree(parts_dir / f"{split}-{p:05d}", ignore_errors=True)
        shutil.rmtree(parts_dir / f"{split}-{p:05d}.skipped", ignore_errors=True)
    with contextlib.suppress(OSError):
        parts_dir.rmdir()
    return meta


def shuffled(refs: list[ImageRef], seed: int) -> list[ImageRef]:
    """A seeded random order: each chunk is a random sample of the split (an ImageNet folder is sorted by class,
    and LitData shuffles chunks and items within a chunk, not across chunks)."""
    order = list(refs)
    random.Random(seed).shuffle(order)
    return order
