"""Pretraining on a scene's unlabelled pixels: masked reconstruction, then fine-tuning.

Labels cover a few percent of a real scene, its pixels are free. Before the supervised run the
segmentation network (encoder and decoder; only its last layer swapped) learns to fill in square
patches hidden from its input, from their surroundings, on every stored chip of the chip store
(`wetmap tile --unlabelled`: labelled or not, in any split, since no label is used). Loss: mean
squared error of the normalised bands over hidden, clear pixels. The approach of masked image
modelling (SimMIM / MAE), in the simplest form a U-Net allows.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torch.utils.data import DataLoader

from wetmap.config import TrainPrecision, TrainRunConfig
from wetmap.errors import WetmapError
from wetmap.model.inputs import InputStep
from wetmap.train.dataset import ChipDataset, ChipSet, SeededOrder

HEAD = "segmentation_head."


class MaskedReconstruction(L.LightningModule):
    """Hide `ratio` of the `patch` x `patch` squares of each chip, predict the bands there."""

    def __init__(self, network: nn.Module, n_bands: int, patch: int, ratio: float, lr: float, epochs: int,
                 seed: int) -> None:
        super().__init__()
        self.network, self.n_bands, self.patch, self.ratio = network, n_bands, patch, ratio
        self.lr, self.epochs, self.seed = lr, epochs, seed
        self.losses: list[float] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, clear = batch["image"], batch["clear"]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        turns, flip = int(torch.randint(4, (1,), generator=g)), bool(torch.randint(2, (1,), generator=g))
        x, clear = (torch.rot90(t, turns, (-2, -1)) for t in (x, clear))
        if flip:
            x, clear = x.flip(-1), clear.flip(-1)
        n, _, h, w = x.shape
        p = self.patch
        squares = torch.rand(n, 1, math.ceil(h / p), math.ceil(w / p), generator=g) < self.ratio
        hidden = squares.repeat_interleave(p, 2).repeat_interleave(p, 3)[:, :, :h, :w].to(x.device)
        out = self.network(x * ~hidden)
        scored = (hidden[:, 0] & clear).unsqueeze(1).to(out.dtype)
        err = (out.float() - x[:, :self.n_bands].float()) ** 2 * scored
        loss = err.sum() / (scored.sum() * self.n_bands).clamp_min(1)
        self.log("pretrain_loss", loss, batch_size=n, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("pretrain_loss")
        if value is not None:
            self.losses.append(float(value))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs, eta_min=self.lr * 0.02)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def pretrain(network: nn.Module, chips: ChipSet, step: InputStep, cfg: TrainRunConfig,
             accelerator: str, precision: TrainPrecision) -> dict[str, Any]:
    """Pretrain `network` (a U-Net / DeepLabV3+ of TorchGeo) in place on every stored chip."""
    from torchgeo.trainers import SemanticSegmentationTask

    from wetmap.model.network import torchgeo_task_args

    t = cfg.train
    if cfg.model.arch == "fcn":
        raise WetmapError("train.pretrain_epochs: pretraining needs a U-Net or DeepLabV3+ (model.arch)")
    positions = chips.stored
    if len(positions) < t.batch_size:
        raise WetmapError(f"train.pretrain_epochs: {len(positions)} stored chips to pretrain on; cut the chip "
                          "store with wetmap tile --unlabelled")
    args = {**torchgeo_task_args(cfg.model, step.channels), "task": "multiclass", "num_classes": len(step.bands)}
    recon = SemanticSegmentationTask(**args).model
    _copy_body(network, recon)
    task = MaskedReconstruction(recon, len(step.bands), t.pretrain_patch, t.pretrain_mask, t.lr,
                                t.pretrain_epochs, cfg.seed)
    dataset = ChipDataset(chips, "", step, positions=positions)
    loader = DataLoader(dataset, batch_size=t.batch_size, sampler=SeededOrder(len(dataset), cfg.seed),
                        num_workers=t.num_workers, pin_memory=torch.cuda.is_available(), drop_last=True)
    trainer = L.Trainer(max_epochs=t.pretrain_epochs, accelerator=accelerator, devices=1, precision=precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=sys.stderr.isatty(),
                        enable_model_summary=False, deterministic="warn", log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(task, loader)
    seconds = time.perf_counter() - start
    _copy_body(recon.cpu(), network)
    return {"chips": int(len(positions)), "epochs": t.pretrain_epochs, "seconds": seconds,
            "seconds_per_chip_epoch": seconds / max(1, len(positions) * t.pretrain_epochs),
            "loss_first_epoch": task.losses[0] if task.losses else float("nan"),
            "loss_last_epoch": task.losses[-1] if task.losses else float("nan"),
            "mask_ratio": t.pretrain_mask, "patch": t.pretrain_patch}


def _copy_body(source: nn.Module, target: nn.Module) -> None:
    """Every tensor but the last layer's (which maps to classes in one, to bands in the other)."""
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(HEAD)}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(HEAD) for k in missing):
        raise WetmapError("pretraining: the reconstruction and segmentation networks differ beyond their last layer")
