"""Training: TorchGeo's segmentation task with wetmap's cloud-masked loss, run by Lightning.

TorchGeo builds the network (U-Net, DeepLabV3+, ... on timm/smp backbones, any band count) but
has no Dice loss and its `ignore_index` drops a class rather than masking pixels, so the task
here swaps in `losses.build_loss` and feeds it the valid mask. Validation Dice comes from exact
confusion counts summed over the epoch, on clear pixels only.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from wetmap.config import TrainRunConfig, dump
from wetmap.errors import WetmapError
from wetmap.io.outputs import OutputSet
from wetmap.io.styles import CLASS_COLORS
from wetmap.model.bundle import save_bundle
from wetmap.model.inputs import InputStep
from wetmap.model.network import task_kind, torchgeo_task_args
from wetmap.model.pretrained import apply_weights, input_statistics, read_weights
from wetmap.runtime import resolve_precision
from wetmap.train.checkpoints import ResumePoint, VerifiedCheckpointIO
from wetmap.train.dataset import ChipDataModule, ChipSet, chip_summary, training_chips
from wetmap.train.task import WetmapTask, calibrate_threshold, evaluate_chips, selection_metric


@dataclass(frozen=True)
class FitResult:
    """What a training run made and how it scored; `metrics` is all of metrics.json (per-class
    scores and counts too)."""

    bundle: Path
    val_dice: float               # wetland Dice over the clear pixels of the validation chips
    threshold: float              # P(wetland) above which a pixel is wetland (calibrated on val)
    test_dice: float | None       # the same on the chip store's test split, where it has one
    epochs_run: int
    chips_train: int
    chips_val: int
    chips_test: int
    train_seconds: float
    seconds_per_chip_epoch: float
    clouds: str                   # the cloud mask the chips were cut with
    pretrain: dict[str, Any] | None
    metrics: dict[str, Any]


def fit(cfg: TrainRunConfig, resume: bool = False, overwrite: bool = True,
        callbacks: list[L.Callback] | None = None) -> FitResult | None:
    """Train a model from `cfg` and write the bundle, logs and checkpoints under cfg.output.

    `callbacks` are extra Lightning callbacks (progress reporting, custom logging...). Returns
    None in the non-zero ranks of a multi-process (DDP) run: rank 0 writes and reports.
    """
    out = Path(cfg.output)
    bundle_path = out / "model.pt"
    if bundle_path.exists() and not (overwrite or resume):
        raise WetmapError("a model bundle already exists; pass --overwrite or --resume", bundle_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with training_chips(cfg.data, cfg.seed, cfg.model.classes) as chips:
        return _fit(cfg, chips, resume, callbacks)


def _fit(cfg: TrainRunConfig, chips: ChipSet, resume: bool, callbacks: list[L.Callback] | None) -> FitResult | None:
    """`fit` on chips that stay readable until it returns."""
    out = Path(cfg.output)
    bundle_path = out / "model.pt"
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
                      loss_options=cfg.loss.options.given(), masked=cfg.loss.masked, n_classes=len(m.classes),
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
        from wetmap.train.pretrain import pretrain

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
        return None

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
    return FitResult(bundle_path, float(metrics["val_dice"]), float(threshold), metrics.get("test_dice"), epochs,
                     int(metrics["chips_train"]), int(metrics["chips_val"]), int(metrics.get("chips_test", 0)),
                     seconds, float(metrics["seconds_per_chip_epoch"]), str(metrics.get("clouds", "none")),
                     pretrain_report, metrics)


def result_files(out: Path) -> list[Path]:
    """A training run's result, the bundle last: once it is there, its config and metrics are too."""
    return [out / "config.yaml", out / "metrics.json", out / "model.pt"]
