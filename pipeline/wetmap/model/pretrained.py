"""Pretrained weights from a local file, their first layer mapped onto the model's bands by name.

Nothing is downloaded: `model.weights` names a file on disk, of one of three kinds:
- a wetmap bundle (fine-tuning): the whole network, with its bands and normalisation;
- a Lightning / TorchGeo checkpoint (`{"state_dict": ...}`): the encoder's weights under
  `model.encoder.`, `encoder.` or `backbone.`;
- a plain state dict of the encoder (a timm or torchvision ResNet, TorchGeo's SSL4EO-S12 files).

TorchGeo and timm adapt a first layer by channel count (repeat or average), which lines channels
up by position; a Sentinel-2 model has 13 channels in B01..B12 order and a scene of six bands
would receive B01..B05's filters. Here each input channel takes the filter of the band of the
same name; bands the file lacks get the mean of its filters, index channels zeros (so training
starts from the pretrained response). Loading is `torch.load(weights_only=True)`: no code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wetmap.bands import canonical
from wetmap.errors import WetmapError

# The input bands of a state dict, by its first layer's channel count, where the user names none:
# TorchGeo's Sentinel-2 weights (SSL4EO-S12 / SeCo: all 13 L1C bands, or 12 without B10 for L2A),
# and ImageNet's RGB.
S2_L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]

DEFAULT_BANDS = {13: S2_L1C, 12: [b for b in S2_L1C if b != "B10"], 3: ["B04", "B03", "B02"]}

PREFIXES = ("model.encoder.", "encoder.", "backbone.", "model.")

@dataclass
class Pretrained:
    """What a weights file holds, keyed as the network's state dict."""

    state: dict[str, torch.Tensor]
    bands: list[str] | None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    kind: str = "state dict"
    report: dict[str, Any] = field(default_factory=dict)


def read_weights(path: str | Path, bands: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> Pretrained:
    """Read a weights file (see the module docstring); `bands`: its input bands, in order, and
    `mean` / `std` the normalisation it was trained with, per band (reflectance x 10000)."""
    path = Path(path)
    if not path.is_file():
        raise WetmapError("weights file not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file that is not a state dict
        raise WetmapError(f"not a weights file torch can read safely ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict):
        raise WetmapError("not a weights file: expected a state dict, a checkpoint or a wetmap bundle", path)
    if str(payload.get("format", "")).startswith("wetmap-bundle"):
        # Its channels: bands, then the indices its input step added (they map by name too).
        model = payload.get("model", {})
        channels = [*payload["bands"], *model.get("indices", []), *(["clear"] if model.get("clear_channel") else [])]
        return Pretrained(dict(payload["state_dict"]), channels, payload["mean"].numpy(), payload["std"].numpy(),
                          "wetmap bundle")
    kind = "checkpoint" if isinstance(payload.get("state_dict"), dict) else "state dict"
    raw = payload["state_dict"] if kind == "checkpoint" else payload
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WetmapError("not a weights file: it holds no tensors", path)
    for prefix in PREFIXES:   # a task's checkpoint keeps the encoder under a prefix
        if any(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            break
    state = {f"encoder.{k}": v for k, v in tensors.items() if not k.startswith(("fc.", "head.", "classifier."))}
    first = _first_conv(state)
    n = state[first].shape[1] if first else 0
    if bands is not None:
        names = _band_names(bands, path)
        if len(names) != n:
            raise WetmapError(f"model.weights_bands names {len(names)} bands; the file's first layer takes {n}", path)
    else:
        known = DEFAULT_BANDS.get(n)
        if known is None:
            raise WetmapError(f"the file's first layer takes {n} channels: name them with model.weights_bands", path)
        names = known
    if (mean is None) != (std is None) or (mean is not None and std is not None and not len(mean) == len(std) == n):
        raise WetmapError(f"model.weights_mean and weights_std: give both, one value per the file's {n} bands", path)
    return Pretrained(state, names, None if mean is None else np.asarray(mean, float),
                      None if std is None else np.asarray(std, float), kind)


def _band_names(bands: Sequence[str], path: Path) -> list[str]:
    names = []
    for b in bands:
        name = canonical(str(b))
        if name is None:
            raise WetmapError(f"model.weights_bands: '{b}' is not a band name", path)
        names.append(name)
    return names


def _first_conv(state: dict[str, torch.Tensor]) -> str | None:
    """The network's first convolution: the first 4-D weight in state-dict order."""
    return next((k for k, v in state.items() if k.endswith("weight") and v.ndim == 4), None)


def apply_weights(network: nn.Module, pre: Pretrained, channels: Sequence[str], path: str | Path) -> dict[str, Any]:
    """Load `pre` into `network` whose input channels are `channels` (band names, then index
    names); return what was copied. Every other tensor must match by name and shape."""
    target = network.state_dict()
    first = _first_conv({k: v for k, v in target.items() if k.startswith("encoder.")} or target)
    source = dict(pre.state)   # an encoder's file leaves the decoder and head as initialised
    missing = [k for k in source if k not in target]
    if missing:
        raise WetmapError(f"the weights do not fit model.backbone: the network has no '{missing[0]}' "
                          f"({len(missing)} such tensors)", path)
    copied, filled = [], []
    if first in source and pre.bands is not None:
        src = source.pop(first)
        dst = target[first].clone()
        if src.shape[0] != dst.shape[0] or src.shape[2:] != dst.shape[2:]:
            raise WetmapError(f"the weights' first layer is {tuple(src.shape)}, the network's {tuple(dst.shape)}", path)
        for i, name in enumerate(channels):
            if name in pre.bands:
                dst[:, i] = src[:, pre.bands.index(name)]
                copied.append(name)
            elif canonical(name) is not None:   # a band the file lacks: the mean filter
                dst[:, i] = src.mean(1)
                filled.append(name)
            else:                               # an index or the clear mask: starts at no response
                dst[:, i] = 0
                filled.append(name)
        target[first] = dst
    for key, value in source.items():
        if target[key].shape != value.shape:
            raise WetmapError(f"the weights do not fit model.backbone: '{key}' is {tuple(value.shape)} in the file, "
                              f"{tuple(target[key].shape)} in the network", path)
        target[key] = value
    network.load_state_dict(target)
    return {"file": str(path), "kind": pre.kind, "tensors": len(pre.state), "bands_copied": copied,
            "channels_initialised": filled}


def input_statistics(pre: Pretrained, bands: Sequence[str], mean: np.ndarray,
                     std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input step's statistics: the file's own for the bands it normalised (a bundle's, or
    model.weights_mean / weights_std), the training chips' for the others."""
    if pre.mean is None or pre.std is None or pre.bands is None:
        return mean, std
    mean, std = np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64)
    for i, name in enumerate(bands):
        if name in pre.bands:
            j = pre.bands.index(name)
            mean[i], std[i] = pre.mean[j], pre.std[j]
    return mean, std
