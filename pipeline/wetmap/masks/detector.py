"""Cloud and cloud-shadow detectors: reflectance tiles in, class probabilities out.

A detector is small on purpose (`Detector`): it names the bands it reads, the tile size it takes
and its classes (clear, cloud, shadow), and turns a batch of tiles of reflectance x 10000 into
probabilities. Walking a scene window by window, blending and writing belong to
`wetmap.masks.detection`, so another detector (OmniCloudMask from local weights, say) only has to fill
this in.

The built-in one is ukis-csmask (DLR, Apache-2.0): U-Nets for Sentinel-2 and Landsat 5/7/8/9,
Level-1C and Level-2A, shipped as ONNX files inside its PyPI package, so nothing is downloaded.
Its own `CSmask` class takes a whole image in memory and opens a new ONNX session per image; we
use its model files and their statistics, with one session per scene and our own windows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wetmap.errors import WetmapError

# What every detector's classes mean, in its output order.
DETECTED_CLASSES = ("clear", "cloud", "shadow")

# ukis-csmask's band names -> wetmap's (Sentinel-2) names; NIR may be B08 or B8A.
CSMASK_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": ("B08", "B8A"), "swir16": "B11",
                "swir22": "B12"}


L1_LEVELS = ("L1C", "L1TP", "L1GT", "L1GS", "L1T")

L2_LEVELS = ("L2A", "L2SP", "L2SR")


class Detector(Protocol):
    """A cloud and shadow detector: scene bands in, per-class probabilities out."""

    name: str                  # with its model version, for provenance
    level: str                 # the processing level its model is for (L1C, L2A)
    bands: tuple[str, ...]     # the scene bands it reads, in the order `probabilities` takes them
    tile: int                  # square tiles of this size
    device: str                # where it runs: cpu or cuda

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, len(bands), tile, tile) float32 reflectance x 10000 -> (N, 3, tile, tile) float32."""
        ...


def model_level(level: str) -> str:
    """A product's processing level as the detector knows it: top of atmosphere or surface."""
    text = level.upper()
    if text in L1_LEVELS:
        return "L1C"
    if text in L2_LEVELS:
        return "L2A"
    raise WetmapError(f"processing level {level!r}: the cloud detector knows {', '.join(L1_LEVELS + L2_LEVELS)}")


def csmask_bands(available: set[str]) -> tuple[str, ...] | None:
    """The scene bands ukis-csmask reads (its 6-band model where SWIR is there, else 4 bands)."""
    chosen: list[str] = []
    for key, names in CSMASK_BANDS.items():
        found = next((n for n in ((names,) if isinstance(names, str) else names) if n in available), None)
        if found is None:
            if key.startswith("swir"):
                return tuple(chosen[:4]) if len(chosen) >= 4 else None
            return None
        chosen.append(found)
    return tuple(chosen)


class CsmaskDetector:
    """ukis-csmask's U-Net for `level` (L1C or L2A) on `bands` (4 or 6), on CUDA when asked and able."""

    tile = 256

    def __init__(self, bands: tuple[str, ...], level: str, device: str = "auto", threads: int = 0) -> None:
        try:
            import onnxruntime
            import ukis_csmask
        except ImportError as exc:
            raise WetmapError(f"the cloud detector needs ukis-csmask and onnxruntime ({exc})") from exc
        self.bands, self.level = bands, model_level(level)
        base = Path(ukis_csmask.__file__).parent / f"model_{len(bands)}b_{self.level.lower()}"
        meta = json.loads(base.with_suffix(".json").read_text())
        stats = meta["data"]["dataset_statistics"]
        order = [list(CSMASK_BANDS).index(name) for name in stats["band_names"]]
        self._order = np.asarray(order)
        # The models were trained on reflectance 0-1, normalised by their training statistics.
        self._mean = np.asarray(stats["img"][0], np.float32)[:, None, None] * 10000.0
        self._std = np.asarray(stats["img"][1], np.float32)[:, None, None] * 10000.0
        self.name = f"ukis-csmask {ukis_csmask.__version__} ({meta['model']['version']})"
        available = onnxruntime.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise WetmapError("cloud.device is cuda, but onnxruntime has no CUDA provider "
                              "(install onnxruntime-gpu in place of onnxruntime)")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        self._providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self.device = "cuda" if use_cuda else "cpu"
        self._model, self._threads = str(base.with_suffix(".onnx")), threads
        self._session: Any = None   # opened on first use (onnxruntime.InferenceSession): a cached mask needs only the name

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            self._session = onnxruntime.InferenceSession(self._model, options, providers=self._providers)
        session = self._session
        x = (batch[:, self._order] - self._mean) / self._std
        name = session.get_inputs()[0].name
        logits = session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)
