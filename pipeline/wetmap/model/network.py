"""The segmentation network: a TorchGeo / segmentation-models U-Net built from the model config."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from wetmap.config import ModelConfig


def task_kind(num_classes: int) -> Literal["binary", "multiclass"]:
    """Two classes train as one sigmoid channel (binary); more as softmax (multiclass)."""
    return "binary" if num_classes == 2 else "multiclass"


def torchgeo_task_args(cfg: ModelConfig, in_channels: int) -> dict[str, Any]:
    """Arguments for TorchGeo's SemanticSegmentationTask that define the network."""
    kind = task_kind(len(cfg.classes))
    # weights None: TorchGeo would download a name; wetmap.model.pretrained loads local files itself.
    return {"model": cfg.arch, "backbone": cfg.backbone, "weights": None, "in_channels": in_channels,
            "task": kind, "num_classes": None if kind == "binary" else len(cfg.classes)}


def build_network(cfg: ModelConfig, in_channels: int) -> nn.Module:
    """The bare network TorchGeo builds for this config, randomly initialised."""
    from torchgeo.trainers import SemanticSegmentationTask

    return SemanticSegmentationTask(**torchgeo_task_args(cfg, in_channels)).model
