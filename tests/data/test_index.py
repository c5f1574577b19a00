"""One listing of a folder per folder state: the index file (data.index), read by later runs and other ranks."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorization.data import FolderDataModule, sources
from colorization.data import index as index_module


@pytest.fixture
def class_tree(tmp_path) -> Path:
    """3 class folders x 6 small PNGs."""
    root = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for c in ("n01", "n02", "n03"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def counted(monkeypatch):
    """Counts the folder walks and the decodings of hold-out candidates."""
    calls = {"walk": 0, "decode": 0}
    walk, readable = sources._walk_images, sources.__dict__.get("readable")

    def counting_walk(path):
        calls["walk"] += 1
        return walk(path)

    monkeypatch.setattr(sources, "_walk_images", counting_walk)
    import colorization.data.source_modules as datamodule

    original = datamodule.readable

    def counting_readable(path):
        calls["decode"] += 1
        return original(path)

    monkeypatch.setattr(datamodule, "readable", counting_readable)
    assert readable is None  # sources itself decodes nothing
    return calls


def test_a_second_run_reads_the_index_and_decodes_nothing(class_tree, counted):
    first = FolderDataModule(root=str(class_tree), labels=True, val_size=2)
    assert counted == {"walk": 0, "decode": 0}  # nothing is listed in the constructor
    first.setup("fit")
    assert counted == {"walk": 1, "decode": 1}  # the hold-out candidate (18 files: 1 held out), checked once
    second = FolderDataModule(root=str(class_tree), labels=True, val_size=2)
    second.setup("fit")
    assert counted == {"walk": 1, "decode": 1}, "the second DataModule walked or decoded again"
    assert first.file_split == second.file_split
    assert second.file_split.classes == ["n01", "n02", "n03"]  # from the same listing
    expected = sorted(class_tree.rglob("*.png"))
    assert sorted(second.file_split.train + second.file_split.val) == expected


def test_a_changed_class_folder_is_listed_again(class_tree, counted):
    FolderDataModule(root=str(class_tree), val_size=2).setup("fit")
    time.sleep(0.01)
    new = class_tree / "n02" / "new.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(new)
    dm = FolderDataModule(root=str(class_tree), val_size=2)
    files = dm.file_split.train + dm.file_split.val
    assert counted["walk"] == 2 and new in files


def test_data_index_puts_the_index_where_asked_and_reuses_it(class_tree, tmp_path, counted):
    path = tmp_path / "imagenet_index.json"
    FolderDataModule(root=str(class_tree), val_size=2, index=str(path)).setup("fit")
    written = json.loads(path.read_text())
    assert written["root"] == str(class_tree.resolve()) and len(written["files"]) == 18
    assert all(not Path(f).is_absolute() for f in written["files"])
    FolderDataModule(root=str(class_tree), val_size=2, index=str(path)).setup("fit")
    assert counted["walk"] == 1


def test_other_ranks_wait_for_rank_0s_index_instead_of_walking(class_tree, counted, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(index_module, "WAIT_FOR_RANK_0_S", 30.0)
    path = index_module.default_index_path(class_tree)

    def rank_0_lists_later():
        time.sleep(1.0)
        files = sorted(class_tree.rglob("*.png"))
        key = index_module.folder_key(class_tree)
        index_module._write(
            path, {"key": key, "root": str(class_tree), "files": [str(f.relative_to(class_tree)) for f in files]}
        )

    writer = threading.Thread(target=rank_0_lists_later)
    writer.start()
    files, _, _ = index_module.indexed_files(class_tree, sources._walk_images)
    writer.join()
    assert counted["walk"] == 0 and len(files) == 18
    assert os.environ["RANK"] == "1"
