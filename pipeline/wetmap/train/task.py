"""The Lightning task: TorchGeo's segmentation task under wetmap's masked loss, metrics and threshold."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import kornia.augmentation as K
import numpy as np
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.utils.data import DataLoader
from torchgeo.trainers import SemanticSegmentationTask

from wetmap.chips.store import LABEL_UNKNOWN
from wetmap.errors import WetmapWarning
from wetmap.metrics import confusion, scores
from wetmap.model.inputs import InputStep
from wetmap.train.dataset import ChipDataset, ChipSet
from wetmap.train.losses import build_loss


class WetmapTask(SemanticSegmentationTask):
    """TorchGeo semantic segmentation with a masked loss and exact, masked validation Dice."""

    monitor = "val_dice"
    mode = "max"
    val_counts: torch.Tensor   # a buffer (configure_metrics)

    def __init__(self, model: Literal["unet", "deeplabv3+", "fcn"] = "unet", backbone: str = "resnet18",
                 weights: str | None = None, in_channels: int = 6, task: Literal["binary", "multiclass"] = "binary",
                 num_classes: int | None = None,
                 lr: float = 1e-3, patience: int = 10, loss_name: str = "dice",
                 loss_options: dict[str, Any] | None = None, masked: bool = True, n_classes: int = 2,
                 augment: str = "dihedral", jitter: float = 0.1, n_bands: int | None = None,
                 weight_decay: float = 1e-4, seed: int = 0) -> None:
        super().__init__(model=model, backbone=backbone, weights=weights, in_channels=in_channels, task=task,
                         num_classes=num_classes, lr=lr, patience=patience)
        # Flips and 90° rotations, applied identically to image, labels and masks: exact on a
        # pixel grid, and imagery has no up (unlike photographs).
        self.augmenter = K.AugmentationSequential(K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
                                                  K.RandomRotation90(times=(0, 3)), data_keys=["input", "mask"])

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Augment training batches on the device, seeded by (seed, step) so a resumed run repeats them."""
        mode = self.hparams["augment"]
        if mode is True:   # hparams of a checkpoint from before `augment` named a mode
            mode = "dihedral"
        if not (mode and mode != "none" and self._trainer is not None and self._trainer.training):
            return batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams["seed"] * 1_000_003 + self.global_step)
            masks = torch.stack([batch["mask"].float(), batch["valid"].float(), batch["clear"].float()], 1)
            image, masks = self.augmenter(batch["image"], masks)
            clear = masks[:, 2] > 0.5
            if mode == "full":
                image = self._jitter(image, clear)
        return {"image": image, "mask": masks[:, 0].round().long(), "valid": masks[:, 1] > 0.5, "clear": clear}

    def _jitter(self, image: torch.Tensor, clear: torch.Tensor) -> torch.Tensor:
        """Per chip and band, contrast x (1 +- j) and brightness +- j standard deviations on the
        normalised bands (not the indices, which are ratios): other dates, sensors and haze shift
        each band a little. Pixels that are not clear stay at 0."""
        n, bands = image.shape[0], self.hparams["n_bands"] or image.shape[1]
        j = self.hparams["jitter"]
        gain = 1 + (torch.rand(n, bands, 1, 1, device=image.device) * 2 - 1) * j
        shift = (torch.rand(n, bands, 1, 1, device=image.device) * 2 - 1) * j
        out = image.clone()
        out[:, :bands] = (image[:, :bands] * gain + shift) * clear.unsqueeze(1).to(image.dtype)
        return out

    def configure_losses(self) -> None:
        self.criterion = build_loss(self.hparams["loss_name"], mode=self.hparams["task"],
                                    **dict(self.hparams["loss_options"] or {}))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW with a cosine decay over the run (TorchGeo's plateau schedule minimises the monitor)."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])
        epochs = self.trainer.max_epochs if self.trainer and self.trainer.max_epochs else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=self.hparams["lr"] * 0.02)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def configure_metrics(self) -> None:
        k = self.hparams["n_classes"]
        self.register_buffer("val_counts", torch.zeros(k, 4, dtype=torch.int64), persistent=False)

    def on_fit_start(self) -> None:
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["image"]
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return self(x)

    def _loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Masked: clear pixels only. Unmasked (for the loss experiment): every pixel with a label.
        valid = batch["valid"] if self.hparams["masked"] else batch["mask"] != LABEL_UNKNOWN
        return self.criterion(logits, batch["mask"], valid)

    def predicted_labels(self, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        if self.hparams["task"] == "binary":
            return (torch.sigmoid(logits[:, 0].float()) > threshold).long()
        return logits.argmax(1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        loss = self._loss(self._forward(batch), batch)
        self.log("train_loss", loss, batch_size=batch["image"].shape[0], prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_counts.zero_()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self._forward(batch)
        # averaged over the processes under DDP (each sees part of the validation chips)
        self.log("val_loss", self._loss(logits, batch), batch_size=batch["image"].shape[0], sync_dist=True)
        self.val_counts += confusion(self.predicted_labels(logits), batch["mask"], batch["valid"],
                                     self.hparams["n_classes"])

    def on_validation_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self.val_counts, reduce_op="sum") if self.trainer else self.val_counts
        dice = headline_dice(scores(counts))
        # the same on every process (the counts are summed first): averaging changes nothing
        self.log("val_dice", torch.tensor(0.0 if math.isnan(dice) else dice), prog_bar=True, sync_dist=True)


def headline_dice(s: dict[str, Any]) -> float:
    """Wetland Dice for binary maps; mean over non-background classes otherwise."""
    per = s["per_class"]
    if len(per) == 2:
        return per[1]["dice"]
    values = [c["dice"] for c in per[1:] if not math.isnan(c["dice"])]
    return float(np.mean(values)) if values else math.nan


def selection_metric(chips: ChipSet) -> tuple[str, str]:
    """What picks the best epoch and stops early: validation Dice, or the validation loss where the
    validation chips hold no wetland pixel (their Dice is 0 whatever the model does, and the
    first epoch would be kept as the best)."""
    if (chips.wetland[chips.ids("val")] > 0).any():
        return "val_dice", "max"
    warnings.warn("the validation chips hold no wetland pixel: the best epoch is chosen by the validation "
                  "loss, not Dice; a validation split with wetland in it chooses better", WetmapWarning, stacklevel=3)
    return "val_loss", "min"


@torch.no_grad()
def evaluate_chips(task: WetmapTask, chips: ChipSet, batch_size: int, split: str = "val",
                   step: InputStep | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Exact scores of `task` on the chips of one split (clear pixels only)."""
    task.eval()
    counts = torch.zeros(task.hparams["n_classes"], 4, dtype=torch.int64)
    for batch in DataLoader(ChipDataset(chips, split, step), batch_size=batch_size):
        batch = {k: v.to(task.device) for k, v in batch.items()}
        labels = task.predicted_labels(task._forward(batch), threshold)
        counts += confusion(labels, batch["mask"], batch["valid"], task.hparams["n_classes"]).cpu()
    s = scores(counts)
    return {f"{split}_dice": headline_dice(s), f"{split}_counts": counts.tolist(), f"{split}_scores": s}


THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.05), 2)

@torch.no_grad()
def calibrate_threshold(task: WetmapTask, chips: ChipSet, batch_size: int, step: InputStep) -> tuple[float, float]:
    """The probability above which a pixel is wetland that gives the best validation Dice, and that
    Dice; 0.5 for a multi-class model or a validation split without wetland.

    Why: 0.5 is right for a calibrated model, and a model trained on a few percent of wetland under
    Dice + BCE is not; the index baselines pick their thresholds on the same pixels."""
    if task.hparams["task"] != "binary" or not (chips.wetland[chips.ids("val")] > 0).any():
        return 0.5, math.nan
    task.eval()
    hist_pos, hist_neg = np.zeros(len(THRESHOLDS), np.int64), np.zeros(len(THRESHOLDS), np.int64)
    positives = 0
    for batch in DataLoader(ChipDataset(chips, "val", step), batch_size=batch_size):
        batch = {k: v.to(task.device) for k, v in batch.items()}
        p = torch.sigmoid(task._forward(batch)[:, 0].float())[batch["valid"]].cpu().numpy()
        truth = (batch["mask"][batch["valid"]] == 1).cpu().numpy()
        above = p[:, None] > THRESHOLDS[None, :]
        hist_pos += above[truth].sum(0)
        hist_neg += above[~truth].sum(0)
        positives += int(truth.sum())
    dice = 2 * hist_pos / np.maximum(hist_pos + hist_neg + positives, 1)
    best = float(dice.max())
    # Ties (a plateau) go to the threshold nearest 0.5.
    choice = min(np.flatnonzero(dice >= best - 1e-12), key=lambda i: abs(THRESHOLDS[i] - 0.5))
    return float(THRESHOLDS[choice]), best
