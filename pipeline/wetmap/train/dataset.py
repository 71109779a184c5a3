"""Training data: chips read from a chip store, datasets, samplers and the Lightning data module.

A run's chips always come from a `wetmap tile` chip store: the one `data.chips` names, or one cut
first from `data.image` / `data.labels` (`training_chips`), so the split (by spatial blocks: no
chip straddles train and validation), the kept chips and the normalisation statistics are made by
one piece of code however the data is named.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wetmap.chips.build import build_chip_store
from wetmap.chips.store import open_chip_store
from wetmap.config import DataConfig, SplitConfig, TileConfig
from wetmap.errors import WetmapError
from wetmap.model.inputs import InputStep


@dataclass
class ChipSet:
    """Training chips: raw image (N,C,S,S), labels (N,S,S), valid masks (clear and labelled: the
    loss), clear masks (the network's input), split and statistics.

    The arrays are numpy (chips cut in memory) or Zarr (a `wetmap tile` chip store, read chip by
    chip); `split` names each position's split ('' for positions that are not used).
    """

    image: Any
    label: Any
    valid: Any
    clear: Any
    split: np.ndarray
    bands: list[str]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))
    summary: dict[str, float | int | str] = field(default_factory=dict)
    scene: dict[str, Any] = field(default_factory=dict)   # what the chips were cut from (SceneSpec.describe)
    wetland: np.ndarray = field(default_factory=lambda: np.zeros(0))   # per position: wetland share of valid px
    stored: np.ndarray = field(default_factory=lambda: np.zeros(0, int))   # positions with an image, labelled or not

    def ids(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == name)

    def input_step(self, indices: tuple[str, ...] = (), clear_channel: bool = False) -> InputStep:
        return InputStep(tuple(self.bands), self.mean, self.std, indices, clear_channel)


def tile_config(data: DataConfig, seed: int, classes: Sequence[str]) -> TileConfig:
    """The `wetmap tile` settings that cut the chips a training config names by rasters: chips of
    `chip_size` side by side, kept when `min_valid` of them is clear and labelled, split by blocks
    of `split_block` chips into train and val."""
    if data.image is None or data.labels is None:
        raise WetmapError("data.image and data.labels are needed to cut chips")
    return TileConfig(image=data.image, labels=data.labels, clouds=data.clouds, band_names=data.band_names,
                      classes=list(classes), label_values=data.label_values, bands=list(data.bands),
                      size=data.chip_size, overlap=0, min_valid=data.min_valid, seed=seed,
                      split=SplitConfig(block=data.split_block * data.chip_size, val=data.val_fraction, test=0.0),
                      cloud=data.cloud)


@contextlib.contextmanager
def training_chips(data: DataConfig, seed: int, classes: Sequence[str]) -> Iterator[ChipSet]:
    """The chips a run trains on, always read from a chip store: `data.chips`, or one cut first
    from `data.image` / `data.labels` by `wetmap tile`'s own code into `data.store` (kept) or a
    temporary folder (removed when training ends). One way to make chips: the same reading,
    filtering, split and statistics whichever way a run names its data."""
    if data.chips is not None:
        yield load_chip_store(data.chips, data.bands)
        return
    tile = tile_config(data, seed, classes)
    if data.store is not None:
        build_chip_store(tile, data.store, overwrite=True)
        yield load_chip_store(data.store, data.bands)
        return
    with tempfile.TemporaryDirectory(prefix="wetmap-chips-") as folder:
        store = Path(folder) / "chips"
        build_chip_store(tile, store)
        yield load_chip_store(store, data.bands)


def load_chip_store(path: str | Path, bands: list[str]) -> ChipSet:
    """The kept train / val chips of a `wetmap tile` store, read lazily, with its statistics."""
    store = open_chip_store(path)
    stored = store.meta["stats"]["bands"]
    if list(bands) != list(stored):
        raise WetmapError(f"chip store has bands {','.join(stored)}, the config asks for {','.join(bands)}", path)
    split = np.full(store.image.shape[0], "", dtype=object)
    kept = store.index[store.index["kept"]]
    split[kept["chip"].to_numpy()] = kept["split"].to_numpy()
    used = kept[kept["split"].isin(["train", "val"])]
    if not (used["split"] == "train").any() or not (used["split"] == "val").any():
        raise WetmapError("chip store needs kept chips in both the train and the val split", path)
    weights = used["valid_fraction"].to_numpy()
    summary = {"valid_fraction": float(weights.mean()),
               "wetland_fraction": float((used["wetland_fraction"] * weights).sum() / max(weights.sum(), 1e-12)),
               "clouds": store.meta.get("inputs", {}).get("clouds") or "none"}
    stats = store.meta["stats"]
    wetland = np.zeros(store.image.shape[0])
    wetland[kept["chip"].to_numpy()] = kept["wetland_fraction"].to_numpy()
    return ChipSet(store.image, store.label, store.valid, store.clear, split.astype(str), list(stored),
                   np.asarray(stats["mean"]), np.asarray(stats["std"]), summary, store.meta.get("scene", {}), wetland,
                   store.index.loc[store.index["stored"], "chip"].to_numpy())


class ChipDataset(Dataset):
    """Network-ready chips as TorchGeo-style sample dicts: image (through the model's input step,
    masked by the clear pixels, as prediction does), mask, and the valid mask of the loss.

    Augmentation happens on the batch, in the training task (kornia), so it runs on the GPU.
    """

    def __init__(self, chips: ChipSet, split: str, step: InputStep | None = None,
                 positions: np.ndarray | None = None) -> None:
        self.chips, self.positions = chips, chips.ids(split) if positions is None else positions
        self.step = step or chips.input_step()

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, j = self.chips, int(self.positions[i])
        valid = torch.from_numpy(np.asarray(c.valid[j]))
        clear = torch.from_numpy(np.asarray(c.clear[j]))
        image = self.step(torch.from_numpy(np.asarray(c.image[j]).astype(np.float32)), clear, inplace=True)
        mask = torch.from_numpy(np.asarray(c.label[j]).astype(np.int64))
        return {"image": image, "mask": mask, "valid": valid, "clear": clear}


class SeededOrder(Sampler[int]):
    """A random order fixed by its seed: the same every time it is iterated (a resumed run may
    iterate a loader more often than an uninterrupted one; a consumed generator would drift).

    With `weights`, an epoch draws as many chips with replacement, each in proportion to its
    weight (class-balanced sampling); without, it is a permutation. With several processes (DDP),
    process `rank` of `world` takes every world-th chip of the one order, padded from its start so
    that every process takes as many steps (DDP's gradient exchange needs it).
    """

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.weights, self.rank, self.world = n, seed, weights, rank, world

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        if self.weights is None:
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            w = torch.as_tensor(self.weights, dtype=torch.float64)
            order = torch.multinomial(w, self.n, replacement=True, generator=generator).tolist()
        if self.world > 1:
            order = (order + order[: len(self) * self.world - self.n])[self.rank::self.world]
        return iter(order)


def balanced_weights(wetland: np.ndarray) -> np.ndarray | None:
    """Chip weights that make chips with and without wetland equally likely; None (a plain
    permutation) when every chip is of one kind. With wetland in a few chips of many, uniform
    sampling shows the network a wetland pixel in a minority of its batches."""
    has = wetland > 0
    n_pos, n_neg = int(has.sum()), int((~has).sum())
    if not n_pos or not n_neg:
        return None
    return np.where(has, 0.5 / n_pos, 0.5 / n_neg)


class ChipDataModule(L.LightningDataModule):
    """Train / validation loaders over a ChipSet, pinned memory when a GPU takes the batches.

    The training order is drawn from (seed, epoch), so a resumed run sees the same batches as an
    uninterrupted one (the trainer reloads the loader every epoch).
    """

    def __init__(self, chips: ChipSet, batch_size: int, num_workers: int = 0, seed: int = 0,
                 step: InputStep | None = None, balanced: bool = False) -> None:
        super().__init__()
        self.chips, self.batch_size, self.num_workers, self.seed = chips, batch_size, num_workers, seed
        self.step, self.balanced = step, balanced

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = ChipDataset(self.chips, split, self.step)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        weights = balanced_weights(self.chips.wetland[dataset.positions]) if self.balanced else None
        if shuffle:
            order: Sampler[int] | list[int] | None = SeededOrder(len(dataset), self.seed * 100_003 + epoch, weights,
                                                                 rank, world)
        else:   # validation: each chip on exactly one process, none repeated, so counts sum exactly
            order = list(range(rank, len(dataset), world)) if world > 1 else None
        return DataLoader(dataset, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)


def chip_summary(chips: ChipSet) -> dict[str, float | int | str]:
    """Counts a user wants to see before training: chips per split, wetland share of valid pixels."""
    return {"chips_train": len(chips.ids("train")), "chips_val": len(chips.ids("val")), **chips.summary}
