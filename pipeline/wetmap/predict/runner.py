"""Running the model on tiles: batches on the device, autocast, test-time augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from wetmap.config import PredictConfig
from wetmap.io.blend import StripAccumulator
from wetmap.io.readahead import read_ahead
from wetmap.io.windows import Tile, TileGrid
from wetmap.model.bundle import Bundle
from wetmap.predict.classes import combine_scenes
from wetmap.predict.scenes import SceneStack
from wetmap.runtime import autocast_dtype

# Test-time views: (quarter turns, flip left-right) of the dihedral group; flips = the identity,
# both mirror images and their product (a half turn).
TTA_VIEWS = {"none": ((0, False),), "flips": ((0, False), (0, True), (2, False), (2, True)),
             "dihedral": tuple((k, f) for k in range(4) for f in (False, True))}


class TilePredictor:
    """Runs the bundle's network on batches of raw tiles and returns class probabilities."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto", tta: str = "none") -> None:
        self.bundle, self.device, self.views = bundle, device, TTA_VIEWS[tta]
        self.model = bundle.model.to(device).eval()
        self.amp = autocast_dtype(device, precision)
        self.inputs = bundle.inputs
        self.channels_last = device.type == "cuda" or self.amp is not None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N,channels,H,W) probabilities (see Bundle.probabilities) of raw (N,C,H,W) float32 bands;
        on the CPU `raw` is normalised in place (callers hand over batches they no longer need)."""
        x = torch.from_numpy(raw).to(self.device, non_blocking=True)
        ok = torch.from_numpy(valid).to(self.device, non_blocking=True)
        x = self.inputs(x, ok, inplace=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total: torch.Tensor | None = None
        for turns, flip in self.views:
            view = torch.rot90(x, turns, (-2, -1)) if turns else x
            view = view.flip(-1) if flip else view
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                p = self.bundle.probabilities(self.model(view))
            p = p.flip(-1) if flip else p
            p = torch.rot90(p, -turns, (-2, -1)) if turns else p
            total = p if total is None else total.add_(p)
        assert total is not None, "TTA_VIEWS always hold the view itself"
        if len(self.views) > 1:
            total /= len(self.views)
        return total.cpu().numpy()


def predict_strips(predictor: TilePredictor, stack: SceneStack, tiles: TileGrid, first: int, stop: int,
                   cfg: PredictConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row offset, probabilities (channels,h,W), valid (h,W)) for each strip of rows that became final
    while tile rows first..stop-1 were predicted.

    Batches never cross a tile row, so a tile's batch (and so its exact output) does not depend
    on where a part of the scene starts.
    """
    acc = StripAccumulator(tiles, predictor.bundle.channels, min(8, cfg.window[1] // 4), first_row=first)
    last_col = tiles.shape[1] - 1
    wanted = (tile for i in range(first, stop) for tile in tiles.row(i))
    pending: list[tuple[Tile, list[tuple[np.ndarray, np.ndarray]]]] = []
    for tile, reads in read_ahead(wanted, lambda t: (stack.read(t),), depth=2 * cfg.batch_size):
        pending.append((tile, reads))
        if len(pending) == cfg.batch_size or tile.col == last_col:
            yield from _run_batch(pending, predictor, acc)
            pending = []


def _run_batch(batch: list[tuple[Tile, list[tuple[np.ndarray, np.ndarray]]]], predictor: TilePredictor,
               acc: StripAccumulator) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Predict, per scene, the tiles where that scene has a clear pixel; combine scenes; blend."""
    n_scenes = len(batch[0][1])
    probs: list[dict[int, np.ndarray]] = [{} for _ in range(n_scenes)]
    for s in range(n_scenes):
        live = [i for i, (_, reads) in enumerate(batch) if reads[s][1].any()]
        for shape in {batch[i][1][s][0].shape for i in live}:   # edge tiles of a small raster may differ
            group = [i for i in live if batch[i][1][s][0].shape == shape]
            out = predictor(np.stack([batch[i][1][s][0] for i in group]), np.stack([batch[i][1][s][1] for i in group]))
            probs[s].update(zip(group, out))
    k = predictor.bundle.channels
    for i, (tile, reads) in enumerate(batch):
        scenes = [s for s in range(n_scenes) if i in probs[s]]
        if scenes:
            p, ok = combine_scenes([probs[s][i] for s in scenes], [reads[s][1] for s in scenes])
        else:
            ok = np.zeros(reads[0][1].shape, bool)
            p = np.zeros((k, *ok.shape), np.float32)
        yield from acc.add(tile, p, ok)
