"""Running the model on tiles: batches on the device, autocast, test-time augmentation.

On a GPU, tiles go as the files hold them (uint16 for Sentinel-2 and Landsat: half the bytes of
float32), from pinned memory, and are rescaled and normalised there; on the CPU the reader thread
converts them to float32 reflectance while the model computes (the same values: the two rescale
with the same float32 operations). Batches are submitted one ahead of the one being blended: on
a GPU the next batch computes while the CPU blends and writes the last (on the CPU the
submission itself computes, and the order of the work is all that changes). Nothing in a batch
asks the device for a value, so it never waits for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
from wetmap.scenes.reader import Rescale

# Test-time views: (quarter turns, flip left-right) of the dihedral group; flips = the identity,
# both mirror images and their product (a half turn).
TTA_VIEWS = {"none": ((0, False),), "flips": ((0, False), (0, True), (2, False), (2, True)),
             "dihedral": tuple((k, f) for k in range(4) for f in (False, True))}

Reads = list[tuple[np.ndarray, np.ndarray]]   # per scene: raw bands, valid

# Devices sent the files' own values (`SceneStack(raw=True)`). Not the CPU: there the conversion
# would only move from the reader thread, where it overlaps the model, into the model's own.
RAW_DEVICES = ("cuda",)

# Batches submitted and not yet blended: the one the device computes and the one being blended.
IN_FLIGHT = 2


@dataclass
class Pending:
    """A submitted batch's probabilities: on a GPU, copied back into pinned memory as the
    device gets to it (`event` marks the end of the copy)."""

    host: torch.Tensor
    event: torch.cuda.Event | None = None

    def result(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


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
        self._rescales: dict[Rescale, tuple[torch.Tensor, torch.Tensor]] = {}
        self.raw_input = device.type in RAW_DEVICES   # read scenes for it with SceneStack(raw=...)

    def __call__(self, raw: np.ndarray, valid: np.ndarray, rescale: Rescale | None = None) -> np.ndarray:
        """(N,channels,H,W) probabilities (see Bundle.probabilities) of raw (N,C,H,W) bands
        (`SceneReader.read_raw`'s values, `rescale`d on the device); on the CPU a float32 `raw`
        is normalised in place (callers hand over batches they no longer need)."""
        return self.submit(raw, valid, rescale).result()

    @torch.inference_mode()
    def submit(self, raw: np.ndarray, valid: np.ndarray, rescale: Rescale | None = None) -> Pending:
        """Start the batch; its probabilities come from `.result()`."""
        clear = bool(valid.all())   # asked of the host's copy: the device is never made to answer
        x = self._send(raw)
        ok = None if clear else self._send(valid)   # all clear: the step needs no mask (same values)
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        if rescale is not None:
            scale, offset = self._on_device(rescale)
            x.mul_(scale).add_(offset)
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
        if self.device.type != "cuda":
            return Pending(total.cpu())
        host = torch.empty(total.shape, dtype=total.dtype, pin_memory=True)
        host.copy_(total, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Pending(host, event)

    def _send(self, array: np.ndarray) -> torch.Tensor:
        """`array` on the device; to a GPU from pinned memory (torch caches it), without waiting."""
        t = torch.from_numpy(array)
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _on_device(self, rescale: Rescale) -> tuple[torch.Tensor, torch.Tensor]:
        """A scene's scale and offset as (C,1,1) tensors on the device, moved once."""
        if rescale not in self._rescales:
            self._rescales[rescale] = tuple(torch.from_numpy(v).to(self.device).view(-1, 1, 1)   # type: ignore[assignment]
                                            for v in (rescale.scale, rescale.offset))
        return self._rescales[rescale]


def predict_strips(predictor: TilePredictor, stack: SceneStack, tiles: TileGrid, first: int, stop: int,
                   cfg: PredictConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row offset, probabilities (channels,h,W), valid (h,W)) for each strip of rows that became final
    while tile rows first..stop-1 were predicted.

    Batches never cross a tile row, so a tile's batch (and so its exact output) does not depend
    on where a part of the scene starts; they are blended in the order they were submitted.
    """
    acc = StripAccumulator(tiles, predictor.bundle.channels, min(8, cfg.window[1] // 4), first_row=first)
    last_col = tiles.shape[1] - 1
    wanted = (tile for i in range(first, stop) for tile in tiles.row(i))
    pending: list[tuple[Tile, Reads]] = []
    flight: deque[_Batch] = deque()
    for tile, reads in read_ahead(wanted, lambda t: (stack.read(t),), depth=2 * cfg.batch_size):
        pending.append((tile, reads))
        if len(pending) == cfg.batch_size or tile.col == last_col:
            flight.append(_submit_batch(pending, predictor, stack.rescales))
            pending = []
            if len(flight) == IN_FLIGHT:
                yield from _blend_batch(flight.popleft(), predictor.bundle.channels, acc)
    while flight:
        yield from _blend_batch(flight.popleft(), predictor.bundle.channels, acc)


@dataclass
class _Batch:
    """Submitted tiles: per scene, the groups of tiles (by place in the batch) sent together."""

    tiles: list[tuple[Tile, Reads]]
    groups: list[list[tuple[list[int], Pending]]]

    def probabilities(self) -> list[dict[int, np.ndarray]]:
        """Per scene, {tile's place: probabilities}, for the tiles that scene has clear pixels in."""
        out: list[dict[int, np.ndarray]] = []
        for groups in self.groups:
            out.append({})
            for places, pending in groups:
                out[-1].update(zip(places, pending.result()))
        return out


def _submit_batch(batch: list[tuple[Tile, Reads]], predictor: TilePredictor,
                  rescales: Sequence[Rescale | None]) -> _Batch:
    """Submit, per scene, the tiles where that scene has a clear pixel."""
    groups: list[list[tuple[list[int], Pending]]] = []
    for s, rescale in enumerate(rescales):
        groups.append([])
        live = [i for i, (_, reads) in enumerate(batch) if reads[s][1].any()]
        for shape in {batch[i][1][s][0].shape for i in live}:   # edge tiles of a small raster may differ
            group = [i for i in live if batch[i][1][s][0].shape == shape]
            raw, valid = (np.stack([batch[i][1][s][k] for i in group]) for k in (0, 1))
            groups[-1].append((group, predictor.submit(raw, valid, rescale)))
    return _Batch(batch, groups)


def _blend_batch(batch: _Batch, channels: int, acc: StripAccumulator) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Combine a submitted batch's scenes per tile, then blend."""
    probs = batch.probabilities()
    for i, (tile, reads) in enumerate(batch.tiles):
        scenes = [s for s in range(len(probs)) if i in probs[s]]
        if scenes:
            p, ok = combine_scenes([probs[s][i] for s in scenes], [reads[s][1] for s in scenes])
        else:
            ok = np.zeros(reads[0][1].shape, bool)
            p = np.zeros((channels, *ok.shape), np.float32)
        yield from acc.add(tile, p, ok)
