"""The benchmark's inputs (ImageNet-like JPEGs from the sample photos) and the 2016-style per-image pipeline it
is compared with: the authors' Caffe Python layers, re-implemented on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from colorization.data.datasets import split_key
from colorization.data.sources import SAMPLE_TRAIN, SAMPLE_VAL, sample_photo_dir
from colorization.models.module import ColorizationModule


# ---- inputs ---------------------------------------------------------------------------------------
def write_jpegs(root: Path, n: int, width: int, height: int, quality: int, seed: int = 0) -> list[Path]:
    """ImageNet-like JPEG files from the bundled color photos: random crops (half to all of the photo),
    resized to width x height, flipped at random. Written once; reused when already there."""
    folder = root / f"{n}_{width}x{height}_q{quality}"
    files = sorted(folder.glob("*.jpg"))
    if len(files) == n:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.open(sample_photo_dir() / name).convert("RGB") for name in (*SAMPLE_TRAIN, *SAMPLE_VAL)]
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = min(w, int(scale * h * width / height)), int(scale * h)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        tmp = folder / f".img_{i:05d}.tmp.jpg"
        image.save(tmp, quality=quality)
        os.replace(tmp, folder / f"img_{i:05d}.jpg")
    return sorted(folder.glob("*.jpg"))


def center_crops(files: list[Path], n: int, crop: int) -> torch.Tensor:
    """uint8 (n, 3, crop, crop): the loader's validation crops of the first n files."""
    from colorization.data.datasets import ImageFiles, val_transform

    dataset = ImageFiles(files[:n], val_transform(crop, 256))
    return torch.stack([dataset[i]["image"] for i in range(min(n, len(files)))])


# ---- the 2016-style per-image reference -------------------------------------------------------------
class Reference2016:
    """Per image, on a CPU, as the authors' Caffe Python layers (caffe_traininglayers.py): skimage Lab of the
    whole crop, ab picked at 1/stride, its k nearest bins by scikit-learn's ball tree (their NNEncode; scipy's
    cKDTree, faster, stands in when scikit-learn is not installed: ``nn_search`` says which), Gaussian weights
    written into a dense (Q, h, w) target, the rebalancing weight of its argmax, and the gray check.
    Picklable (loader workers, process pools): the tree is built where it is used."""

    def __init__(self, bins: torch.Tensor, k: int, sigma: float, class_weights: torch.Tensor, threshold: float):
        self.bins = bins.double().numpy()
        self.k, self.sigma, self.threshold = k, sigma, threshold
        self.class_weights = class_weights.float().numpy()
        self._query = None

    @property
    def nn_search(self) -> str:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "scipy cKDTree (scikit-learn not installed; faster than the authors' ball tree)"
        return "scikit-learn NearestNeighbors(algorithm='ball_tree'), as the authors"

    def _build_query(self):
        try:
            from sklearn.neighbors import NearestNeighbors
        except ImportError:
            from scipy.spatial import cKDTree

            tree = cKDTree(self.bins)
            return lambda points: tree.query(points, k=self.k)
        return NearestNeighbors(n_neighbors=self.k, algorithm="ball_tree").fit(self.bins).kneighbors

    def __call__(self, rgb: np.ndarray, stride: int = 4) -> dict[str, np.ndarray]:
        from skimage.color import rgb2lab

        if self._query is None:
            self._query = self._build_query()
        lab = rgb2lab(rgb)
        ab = lab[::stride, ::stride, 1:]
        h, w = ab.shape[:2]
        d, j = self._query(ab.reshape(-1, 2))
        d, j = d.reshape(h * w, -1), j.reshape(h * w, -1)
        wts = np.exp(-(d**2) / (2 * self.sigma**2))
        wts /= wts.sum(1, keepdims=True)
        z = np.zeros((h * w, len(self.bins)), np.float32)
        z[np.arange(h * w)[:, None], j] = wts
        return {
            "L": lab[None, ..., 0].astype(np.float32),
            "z": np.ascontiguousarray(z.T.reshape(-1, h, w)),
            "pixel_weight": self.class_weights[z.argmax(1)].reshape(h, w),
            "mask": np.float32((np.abs(ab) > self.threshold).any()),
        }


class Reference2016Crops(Dataset):
    """The project's training crops (decoded and cropped by its loader workers), then ``Reference2016``."""

    def __init__(self, images: Dataset, reference: Reference2016):
        self.images, self.reference = images, reference

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> dict:
        rgb = self.images[key]["image"].permute(1, 2, 0).numpy()
        return {key: torch.from_numpy(np.asarray(value)) for key, value in self.reference(rgb).items()}


class Repeated(Dataset):
    """``times`` passes over a dataset as one epoch: the timed steps never cross an epoch boundary (on
    ImageNet an epoch is 32k steps of 40; a few thousand bench files would end one every few steps)."""

    def __init__(self, dataset: Dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key):
        i, epoch = split_key(key)
        return self.dataset[(i % len(self.dataset), epoch)]


class DenseSoftCrossEntropy(nn.Module):
    """The authors' loss on a dense soft target Z (B, Q, h, w), rebalanced per pixel, masked per image;
    the same value as ``ColorizationLoss("rebalanced")`` on the sparse form of Z."""

    classification = True

    def forward(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        ce = -(batch["z"] * F.log_softmax(logits.float(), dim=1)).sum(1) * batch["mask"].view(-1, 1, 1)
        loss = (ce * batch["pixel_weight"]).sum() / len(ce)  # summed over pixels / N (the authors' scale)
        return {"loss": loss, "loss_per_pixel": loss / ce[0].numel(), "ce": ce.mean()}


class Legacy2016Module(ColorizationModule):
    """The 2016 configuration of the module: targets come ready from the loader, the loss is dense."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.criterion = DenseSoftCrossEntropy()

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        return batch


def _reference_batch(args) -> int:
    reference, crops = args
    for rgb in crops:
        reference(rgb)
    return len(crops)


