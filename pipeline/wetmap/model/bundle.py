"""Model bundles: the network's weights with everything prediction needs to use them right."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wetmap.config import ModelConfig
from wetmap.errors import WetmapError, first_line
from wetmap.model.inputs import InputStep
from wetmap.model.network import build_network
from wetmap.runtime import versions

BUNDLE_FORMAT = "wetmap-bundle/1"


def _plain(data: Any) -> Any:
    """Plain JSON types only (numpy scalars, paths -> float/str), so weights_only loading accepts them."""
    return json.loads(json.dumps(data, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


@dataclass
class Bundle:
    """A loaded model: `.model` takes the input step's (N,channels,H,W) output and returns logits."""

    model: nn.Module
    bands: list[str]
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    colors: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    scene: dict[str, Any] = field(default_factory=dict)   # what it was trained on: sensor, level, convention
    indices: tuple[str, ...] = ()                         # spectral indices the input step adds
    clear_channel: bool = False                           # the clear mask as an input channel
    chip_size: int | None = None                          # training chips' side: prediction's window
    threshold: float = 0.5                                # binary: P(wetland) above which a pixel is wetland

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def inputs(self) -> InputStep:
        """Raw band values (…,bands,H,W) and clear mask to the network's input (wetmap.model.inputs)."""
        return InputStep(tuple(self.bands), self.mean, self.std, self.indices, self.clear_channel)

    @property
    def channels(self) -> int:
        """Probability channels prediction carries: 1 (the positive class) for binary models."""
        return 1 if self.binary else len(self.classes)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,channels,H,W) from the network's logits: softmax over K classes, or for a binary
        model only P(class 1), half the memory and blending work of carrying 1 - p along."""
        logits = logits.float()
        if self.binary:
            return torch.sigmoid(logits[:, :1])
        return torch.softmax(logits, 1)


def save_bundle(path: str | Path, network: nn.Module, model_cfg: ModelConfig, bands: list[str],
                mean: np.ndarray, std: np.ndarray, config: dict[str, Any], metrics: dict[str, Any],
                colors: dict[int, tuple[int, int, int, int]], scene: dict[str, Any] | None = None,
                chip_size: int | None = None, threshold: float = 0.5) -> Path:
    """Write the bundle to `path` as given (the caller commits it, `io.outputs`)."""
    payload = {
        "format": BUNDLE_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "model": model_cfg.model_dump(mode="json"),
        "bands": list(bands),
        "classes": list(model_cfg.classes),
        "colors": {int(k): [int(c) for c in v] for k, v in colors.items()},
        "mean": torch.as_tensor(mean, dtype=torch.float64),
        "std": torch.as_tensor(std, dtype=torch.float64),
        "config": _plain(config),
        "metrics": _plain(metrics),
        "versions": versions(),
        "scene": _plain(scene or {}),
        "chip_size": chip_size,
        "threshold": float(threshold),
    }
    torch.save(payload, path)
    return Path(path)


# What a bundle must hold, and as what: a file with the format key and less is damaged.
BUNDLE_KEYS: dict[str, type] = {"state_dict": dict, "model": dict, "bands": list, "classes": list, "colors": dict,
                                "mean": torch.Tensor, "std": torch.Tensor, "config": dict, "metrics": dict,
                                "versions": dict}


def _read_payload(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise WetmapError("model bundle not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file that is not a bundle
        raise WetmapError(f"not a wetmap model bundle ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise WetmapError(f"not a wetmap model bundle (expected format {BUNDLE_FORMAT})", path)
    for key, kind in BUNDLE_KEYS.items():
        if not isinstance(payload.get(key), kind):
            what = "missing" if key not in payload else f"not a {kind.__name__}"
            raise WetmapError(f"damaged model bundle: '{key}' is {what}", path)
    n = len(payload["bands"])
    if not n or any(len(payload[k]) != n for k in ("mean", "std")) or len(payload["classes"]) < 2:
        raise WetmapError(f"damaged model bundle: {n} bands, {len(payload['mean'])} means, "
                          f"{len(payload['std'])} deviations, {len(payload['classes'])} classes", path)
    return payload


def read_bundle_info_from(payload: dict[str, Any]) -> dict[str, Any]:
    return {"classes": list(payload["classes"]), "bands": list(payload["bands"]),
            "colors": {int(k): tuple(v) for k, v in payload["colors"].items()},
            "mean": payload["mean"].numpy(), "std": payload["std"].numpy(), "scene": dict(payload.get("scene", {})),
            "chip_size": payload.get("chip_size") if isinstance(payload.get("chip_size"), int) else None,
            "threshold": float(payload["threshold"]) if isinstance(payload.get("threshold"), float) else 0.5}


def read_bundle_info(path: str | Path) -> dict[str, Any]:
    """Classes, bands, colours, statistics and training scene of a bundle, without its network."""
    return read_bundle_info_from(_read_payload(path))


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle written by `wetmap train`; the network comes back in eval mode."""
    payload = _read_payload(path)
    try:
        cfg = ModelConfig.model_validate({**payload["model"], "weights": None})
        network = build_network(cfg, len(payload["bands"]) + len(cfg.indices) + cfg.clear_channel)
        network.load_state_dict(payload["state_dict"])
    except (ValueError, KeyError, RuntimeError) as exc:  # pydantic, smp / timm, torch's shape check
        raise WetmapError(f"damaged model bundle: its weights do not fit its model ({first_line(exc)})", path) from None
    network.eval().to(device)
    info = read_bundle_info_from(payload)
    return Bundle(model=network, bands=info["bands"], classes=info["classes"],
                  mean=payload["mean"].numpy(), std=payload["std"].numpy(), colors=info["colors"],
                  config=payload["config"], metrics=payload["metrics"], versions=payload["versions"],
                  scene=info["scene"], indices=tuple(cfg.indices), clear_channel=cfg.clear_channel,
                  chip_size=info["chip_size"],
                  threshold=info["threshold"])
