"""Checkpoints that resume an interrupted run and are verified before they replace the last one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from wetmap.io.outputs import atomic_output


class ResumePoint(Checkpoint):
    """last.ckpt, the full state a resumed run starts from (weights, optimiser, loops, callbacks):
    written at the end of an epoch when `minutes` have passed since the last one, and when training
    ends. A resumed run repeats at most those minutes; writing the full state after every epoch
    (three times the weights, with Adam's moments) cost more than short epochs themselves. A
    `Checkpoint`, so Lightning runs it after the best-model callback, whose state it saves."""

    def __init__(self, path: Path, minutes: float) -> None:
        self.path, self.seconds, self.written = path, minutes * 60, time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's validation and early-stopping check, where Lightning's own
        # ModelCheckpoint saves, so a resumed run starts cleanly at the next epoch.
        if time.monotonic() - self.written < self.seconds:
            return
        trainer.save_checkpoint(self.path)
        self.written = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through `io.outputs`: each checkpoint is written under a
    hidden name, checked (its zip CRCs) and renamed. Lightning's own streams to the final
    name, and a full disk left a truncated best.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_output(path, overwrite=True) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
