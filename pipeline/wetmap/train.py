"""Training: TorchGeo's segmentation task with wetmap's cloud-masked loss, run by Lightning.

TorchGeo builds the network (U-Net, DeepLabV3+, ... on timm/smp backbones, any band count) but
has no Dice loss and its `ignore_index` drops a class rather than masking pixels, so the task
here swaps in `losses.build_loss` and feeds it the valid mask. Validation Dice comes from exact
confusion counts summed over the epoch, on clear pixels only.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader
from torchgeo.trainers import SemanticSegmentationTask

from wetmap.chips import LABEL_UNKNOWN
from wetmap.config import TrainRunConfig, dump
from wetmap.data import (
    ChipDataModule,
    ChipDataset,
    ChipSet,
    chip_summary,
    extract_chips,
    load_chip_store,
)
from wetmap.errors import WetmapError
from wetmap.io.outputs import OutputSet, atomic_output
from wetmap.losses import build_loss
from wetmap.metrics import confusion, scores
from wetmap.model import save_bundle, task_kind, torchgeo_task_args
from wetmap.styles import CLASS_COLORS


class WetmapTask(SemanticSegmentationTask):
    """TorchGeo semantic segmentation with a masked loss and exact, masked validation Dice."""

    monitor = "val_dice"
    mode = "max"

    def __init__(self, model: str = "unet", backbone: str = "resnet18", weights: str | None = None,
                 in_channels: int = 6, task: str = "binary", num_classes: int | None = None,
                 lr: float = 1e-3, patience: int = 10, loss_name: str = "dice",
                 loss_options: dict[str, Any] | None = None, masked: bool = True, n_classes: int = 2,
                 augment: bool = True, seed: int = 0) -> None:
        super().__init__(model=model, backbone=backbone, weights=weights, in_channels=in_channels, task=task,
                         num_classes=num_classes, lr=lr, patience=patience)
        # Flips and 90° rotations, applied identically to image, labels and valid mask.
        self.augmenter = K.AugmentationSequential(K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
                                                  K.RandomRotation90(times=(0, 3)), data_keys=["input", "mask"])

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Augment training batches on the device, seeded by (seed, step) so a resumed run repeats them."""
        if not (self.hparams["augment"] and self._trainer is not None and self._trainer.training):
            return batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams["seed"] * 1_000_003 + self.global_step)
            masks = torch.stack([batch["mask"].float(), batch["valid"].float()], 1)
            image, masks = self.augmenter(batch["image"], masks)
        return {"image": image, "mask": masks[:, 0].round().long(), "valid": masks[:, 1] > 0.5}

    def configure_losses(self) -> None:
        self.criterion = build_loss(self.hparams["loss_name"], mode=self.hparams["task"],
                                    **dict(self.hparams["loss_options"] or {}))

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a cosine decay over the run (TorchGeo's plateau schedule minimises the monitor)."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=1e-4)
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

    def predicted_labels(self, logits: torch.Tensor) -> torch.Tensor:
        if self.hparams["task"] == "binary":
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        loss = self._loss(self._forward(batch), batch)
        self.log("train_loss", loss, batch_size=batch["image"].shape[0], prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_counts.zero_()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self._forward(batch)
        self.log("val_loss", self._loss(logits, batch), batch_size=batch["image"].shape[0])
        self.val_counts += confusion(self.predicted_labels(logits), batch["mask"], batch["valid"],
                                     self.hparams["n_classes"])

    def on_validation_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self.val_counts, reduce_op="sum") if self.trainer else self.val_counts
        dice = headline_dice(scores(counts))
        self.log("val_dice", torch.tensor(0.0 if math.isnan(dice) else dice), prog_bar=True, sync_dist=False)


def headline_dice(s: dict[str, Any]) -> float:
    """Wetland Dice for binary maps; mean over non-background classes otherwise."""
    per = s["per_class"]
    if len(per) == 2:
        return per[1]["dice"]
    values = [c["dice"] for c in per[1:] if not math.isnan(c["dice"])]
    return float(np.mean(values)) if values else math.nan


def resolve_precision(cfg_precision: str | None, accelerator: str) -> str:
    """bf16 mixed precision on GPUs that support it, fp16 mixed on older GPUs, fp32 on the CPU."""
    if cfg_precision:
        return cfg_precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


@torch.no_grad()
def evaluate_chips(task: WetmapTask, chips: ChipSet, batch_size: int, split: str = "val") -> dict[str, Any]:
    """Exact scores of `task` on the chips of one split (clear pixels only)."""
    task.eval()
    counts = torch.zeros(task.hparams["n_classes"], 4, dtype=torch.int64)
    for batch in DataLoader(ChipDataset(chips, split), batch_size=batch_size):
        batch = {k: v.to(task.device) for k, v in batch.items()}
        labels = task.predicted_labels(task._forward(batch))
        counts += confusion(labels, batch["mask"], batch["valid"], task.hparams["n_classes"]).cpu()
    s = scores(counts)
    return {f"{split}_dice": headline_dice(s), f"{split}_counts": counts.tolist(), f"{split}_scores": s}


def fit(cfg: TrainRunConfig, resume: bool = False, overwrite: bool = True,
        callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train a model from `cfg` and write the bundle, logs and checkpoints under cfg.output.

    `callbacks` are extra Lightning callbacks (progress reporting, custom logging...).
    """
    out = Path(cfg.output)
    bundle_path = out / "model.pt"
    if bundle_path.exists() and not (overwrite or resume):
        raise WetmapError("a model bundle already exists; pass --overwrite or --resume", bundle_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    chips = (load_chip_store(cfg.data.chips, cfg.data.bands) if cfg.data.chips
             else extract_chips(cfg.data, cfg.seed, cfg.model.classes))
    summary = chip_summary(chips)
    kind = task_kind(len(cfg.model.classes))
    task = WetmapTask(**torchgeo_task_args(cfg.model, len(cfg.data.bands)), lr=cfg.train.lr,
                      loss_name=cfg.loss.name, loss_options=cfg.loss.options, masked=cfg.loss.masked,
                      n_classes=len(cfg.model.classes), seed=cfg.seed)
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    if resume and not last.exists():
        raise WetmapError("nothing to resume: no last checkpoint", last)
    best_cb = ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val_dice", mode="max", save_last=True)
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator="gpu" if cfg.train.accelerator == "cuda" else cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        precision=resolve_precision(cfg.train.precision, cfg.train.accelerator),
        callbacks=[best_cb, EarlyStopping(monitor="val_dice", mode="max", patience=max(5, cfg.train.epochs // 3)),
                   *(callbacks or [])],
        reload_dataloaders_every_n_epochs=1,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic="warn",
        default_root_dir=out,
        plugins=[VerifiedCheckpointIO()],
    )
    if not resume:  # a fresh run: no earlier result may sit beside this run's logs and checkpoints
        for old in (*checkpoints.glob("*.ckpt"), *result_files(out)):
            old.unlink(missing_ok=True)
    dm = ChipDataModule(chips, cfg.train.batch_size, cfg.train.num_workers, cfg.seed)
    trainer.fit(task, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
    if trainer.global_rank != 0:
        return {}

    # The best weights are read from the name this run gave them, never from the path a resumed
    # checkpoint's callback state names (a crafted last.ckpt could point it at any file), and
    # only as tensors and plain data: loading a checkpoint never runs code.
    best = checkpoints / "best.ckpt"
    state = torch.load(best if best.exists() else last, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    metrics = evaluate_chips(task.cpu(), chips, cfg.train.batch_size)
    if len(chips.ids("test")):  # held-out scores, when the chip store has a test split
        metrics.update(evaluate_chips(task, chips, cfg.train.batch_size, "test"), chips_test=len(chips.ids("test")))
    metrics.update(summary, epochs_run=int(trainer.current_epoch), task=kind)
    config = dump(cfg)
    with OutputSet(result_files(out), overwrite=True) as outputs:
        outputs[out / "config.yaml"].write_text(yaml.safe_dump(config, sort_keys=False))
        outputs[out / "metrics.json"].write_text(json.dumps(metrics, indent=2, default=float))
        save_bundle(outputs[bundle_path], task.model, cfg.model, cfg.data.bands, chips.mean, chips.std, config,
                    {k: v for k, v in metrics.items() if not k.endswith("_scores")}, CLASS_COLORS, scene=chips.scene)
    return {"bundle": str(bundle_path), **metrics}


def result_files(out: Path) -> list[Path]:
    """A training run's result, the bundle last: once it is there, its config and metrics are too."""
    return [out / "config.yaml", out / "metrics.json", out / "model.pt"]


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through `io.outputs`: each checkpoint is written under a
    hidden name, checked (its zip CRCs) and renamed. Lightning's own streams to the final
    name, and a full disk left a truncated best.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_output(path, overwrite=True) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
