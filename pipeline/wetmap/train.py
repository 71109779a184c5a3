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
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.utils.data import DataLoader
from torchgeo.trainers import SemanticSegmentationTask

from wetmap.chips import LABEL_UNKNOWN
from wetmap.config import TrainPrecision, TrainRunConfig, dump
from wetmap.data import (
    ChipDataModule,
    ChipDataset,
    ChipSet,
    chip_summary,
    extract_chips,
    load_chip_store,
)
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.inputs import InputStep
from wetmap.io.outputs import OutputSet, atomic_output
from wetmap.losses import build_loss
from wetmap.metrics import confusion, scores
from wetmap.model import save_bundle, task_kind, torchgeo_task_args
from wetmap.pretrained import apply_weights, input_statistics, read_weights
from wetmap.styles import CLASS_COLORS


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


def resolve_precision(cfg_precision: TrainPrecision | None, accelerator: str) -> TrainPrecision:
    """bf16 mixed precision on GPUs that support it, fp16 mixed on older GPUs, fp32 on the CPU."""
    if cfg_precision:
        return cfg_precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


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
    step = chips.input_step(tuple(cfg.model.indices), cfg.model.clear_channel)
    m, t = cfg.model, cfg.train
    # Read on resume too: the input step takes the file's own normalisation for the bands it knows.
    pretrained = read_weights(m.weights, m.weights_bands, m.weights_mean, m.weights_std) if m.weights else None
    if pretrained is not None:
        step = InputStep(step.bands, *input_statistics(pretrained, step.bands, step.mean, step.std), step.indices,
                         step.clear_channel)
    task = WetmapTask(**torchgeo_task_args(m, step.channels), lr=t.lr, loss_name=cfg.loss.name,
                      loss_options=cfg.loss.options, masked=cfg.loss.masked, n_classes=len(m.classes),
                      augment=t.augment, jitter=t.jitter, n_bands=len(cfg.data.bands),
                      weight_decay=t.weight_decay, seed=cfg.seed)
    weights_report = None
    if pretrained is not None and not resume:   # a resumed run's weights come from its checkpoint
        weights_report = apply_weights(task.model, pretrained, step.names, m.weights or "")
        weights_report.update(mean=step.mean.tolist(), std=step.std.tolist())
    accelerator = "gpu" if t.accelerator == "cuda" else t.accelerator
    precision = resolve_precision(t.precision, t.accelerator)
    pretrain_report = None
    if t.pretrain_epochs and not resume:
        from wetmap.pretrain import pretrain

        pretrain_report = pretrain(task.model, chips, step, cfg, accelerator, precision)
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    if resume and not last.exists():
        raise WetmapError("nothing to resume: no last checkpoint", last)
    monitor, mode = selection_metric(chips)
    # The best weights alone (no optimiser state), written only when the monitored score improves.
    best_cb = ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor, mode=mode,
                              save_weights_only=True, enable_version_counter=False)
    patience = t.patience or max(5, t.epochs // 3)
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        precision=precision,
        callbacks=[best_cb, EarlyStopping(monitor=monitor, mode=mode, patience=patience),
                   ResumePoint(last, t.checkpoint_minutes), *(callbacks or [])],
        reload_dataloaders_every_n_epochs=1,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic="warn",
        use_distributed_sampler=False,   # ChipDataModule splits chips across processes itself
        default_root_dir=out,
        plugins=[VerifiedCheckpointIO()],
    )
    if not resume:  # a fresh run: no earlier result may sit beside this run's logs and checkpoints
        for old in (*checkpoints.glob("*.ckpt"), *result_files(out)):
            old.unlink(missing_ok=True)
    dm = ChipDataModule(chips, t.batch_size, t.num_workers, cfg.seed, step, balanced=t.sampling == "balanced")
    start, first_epoch = time.perf_counter(), 0
    if resume:
        first_epoch = int(torch.load(last, map_location="cpu", weights_only=True).get("epoch", 0))
    trainer.fit(task, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
    seconds = time.perf_counter() - start
    if trainer.global_rank != 0:
        return {}

    # The best weights are read from the name this run gave them, never from the path a resumed
    # checkpoint's callback state names (a crafted last.ckpt could point it at any file), and
    # only as tensors and plain data: loading a checkpoint never runs code.
    best = checkpoints / "best.ckpt"
    state = torch.load(best if best.exists() else last, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    task.cpu()
    threshold = calibrate_threshold(task, chips, t.batch_size, step)[0] if t.calibrate_threshold else 0.5
    metrics = evaluate_chips(task, chips, t.batch_size, step=step, threshold=threshold)
    if len(chips.ids("test")):  # held-out scores, when the chip store has a test split
        metrics.update(evaluate_chips(task, chips, t.batch_size, "test", step, threshold),
                       chips_test=len(chips.ids("test")))
    metrics["threshold"] = threshold
    epochs = int(trainer.current_epoch)
    # Everything fit did (training, validation, checkpoints), per training chip and epoch of this run.
    chip_epochs = max(1, (epochs - first_epoch) * len(chips.ids("train")))
    metrics.update(summary, epochs_run=epochs, task=kind, train_seconds=seconds,
                   seconds_per_chip_epoch=seconds / chip_epochs)
    if weights_report is not None:
        metrics["pretrained"] = weights_report
    if pretrain_report is not None:
        metrics["pretrain"] = pretrain_report
    config = dump(cfg)
    with OutputSet(result_files(out), overwrite=True) as outputs:
        outputs[out / "config.yaml"].write_text(yaml.safe_dump(config, sort_keys=False))
        outputs[out / "metrics.json"].write_text(json.dumps(metrics, indent=2, default=float))
        save_bundle(outputs[bundle_path], task.model, cfg.model, cfg.data.bands, step.mean, step.std, config,
                    {k: v for k, v in metrics.items() if not k.endswith("_scores")}, CLASS_COLORS, scene=chips.scene,
                    chip_size=int(chips.image.shape[-1]), threshold=threshold)
    return {"bundle": str(bundle_path), **metrics}


def result_files(out: Path) -> list[Path]:
    """A training run's result, the bundle last: once it is there, its config and metrics are too."""
    return [out / "config.yaml", out / "metrics.json", out / "model.pt"]


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
