"""The network's input step: harmonised bands -> normalised bands + spectral indices.

One function for training chips and for prediction tiles, so the two can never disagree. Indices
are computed from the raw bands (reflectance x 10000, offsets already removed by the scene
readers) before normalisation, because a ratio of standardised values is not the index. Pixels
that are not clear (cloud, shadow, no data) enter as 0 in every channel: the band mean after
normalisation and a neutral index, never their raw 0 or a bright cloud, which would otherwise
leak into the features of their clear neighbours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

from wetmap.bands import INDICES


@overload
def normalize(raw: torch.Tensor, mean: np.ndarray, std: np.ndarray, valid: torch.Tensor | None = None,
              inplace: bool = False) -> torch.Tensor: ...


@overload
def normalize(raw: np.ndarray, mean: np.ndarray, std: np.ndarray, valid: np.ndarray | None = None,
              inplace: bool = False) -> np.ndarray: ...


def normalize(raw: np.ndarray | torch.Tensor, mean: np.ndarray, std: np.ndarray,
              valid: np.ndarray | torch.Tensor | None = None, inplace: bool = False) -> np.ndarray | torch.Tensor:
    """(…,C,H,W) raw band values to zero-mean unit-variance input; unusable pixels become 0.

    `inplace` (float32 tensors only) reuses the input's memory: prediction owns its batches, and
    three fewer full-size temporaries per batch is a visible share of the data path.
    """
    if isinstance(raw, torch.Tensor):
        m, s = (_statistic(np.asarray(v), raw.device) for v in (mean, std))
        ok = None if valid is None else torch.as_tensor(valid, device=raw.device)   # a tensor as it is
        if inplace and raw.dtype == torch.float32:
            x = raw.sub_(m).div_(s)
            # Most chips are clear throughout; on a GPU, asking would make the host wait for it.
            if ok is not None and (ok.device.type != "cpu" or not bool(ok.all())):
                x.mul_(ok.unsqueeze(-3))
            return x
        x = (raw.float() - m) / s
        if ok is not None:
            x = x * ok.unsqueeze(-3).to(x.dtype)
        return x
    y = (raw.astype(np.float32) - mean.astype(np.float32)[:, None, None]) / std.astype(np.float32)[:, None, None]
    if valid is not None:
        y *= np.asarray(valid)[..., None, :, :]
    return y


def _statistic(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """(C,1,1) float32 `values` on `device`, moved there once per device and values: a copy per
    batch would be a blocking host-to-device copy, making each GPU batch wait for the one before."""
    return _moved(values.tobytes(), values.dtype.str, device)


@functools.lru_cache(maxsize=64)
def _moved(data: bytes, dtype: str, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):   # a normal tensor, usable by training too, whoever made it first
        return torch.from_numpy(np.frombuffer(data, dtype).astype(np.float32)).to(device).view(-1, 1, 1)


# The name of the clear-mask channel (1 clear, 0 hidden), after the bands and indices.
CLEAR = "clear"

@dataclass(frozen=True)
class InputStep:
    """Bands in `bands` order, normalised by `mean` / `std`, then `indices` appended, then (with
    `clear_channel`) the clear mask itself, so that the network can tell a hidden pixel from an
    average one."""

    bands: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    indices: tuple[str, ...] = ()
    clear_channel: bool = False

    @property
    def names(self) -> list[str]:
        """The input channels by name: bands, indices, and `clear`."""
        return [*self.bands, *self.indices, *([CLEAR] if self.clear_channel else [])]

    @property
    def channels(self) -> int:
        return len(self.names)

    def __call__(self, raw: torch.Tensor, valid: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
        """(…,C,H,W) raw bands and (…,H,W) clear mask -> (…,channels,H,W) float32 network input."""
        extra = []
        if self.indices:
            x = raw.float()
            for name in self.indices:
                a, b = (x[..., self.bands.index(band), :, :] for band in INDICES[name])
                total = a + b
                # No index where the two bands sum to nothing (dark or negative reflectance).
                value = torch.where(total > 0, (a - b) / total.clamp_min(1e-6), 0.0).clamp_(-1.0, 1.0)
                extra.append(value if valid is None else value * valid.to(value.dtype))
        if self.clear_channel:
            shape = (*raw.shape[:-3], *raw.shape[-2:])
            extra.append(torch.ones(shape, device=raw.device) if valid is None else valid.float())
        out = normalize(raw, self.mean, self.std, valid, inplace)
        return torch.cat([out, torch.stack(extra, -3)], -3) if extra else out
