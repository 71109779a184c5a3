"""The model: network, input step (normalisation, indices), bundles, pretrained weights; no Lightning.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.model.bundle import Bundle, load_bundle, read_bundle_info, save_bundle
from wetmap.model.inputs import InputStep
from wetmap.model.network import build_network

__all__ = ["Bundle", "InputStep", "build_network", "load_bundle", "read_bundle_info", "save_bundle"]
