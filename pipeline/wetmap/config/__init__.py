"""Typed settings for every stage, loaded from YAML and overridable from the command line.

Unknown keys and bad values are errors that name the file and the dotted key, because a typo in
a scheduled job's config must fail loudly, not silently fall back to a default. Every section is
importable from here (`wetmap.config.TileConfig`); the modules group them by stage.
"""

from wetmap.config.data import ON_THE_FLY_KEYS, DataConfig, SplitConfig, TileConfig
from wetmap.config.files import build, dump, load, parse_overrides, read_yaml
from wetmap.config.run import EvaluateConfig, JobConfig, PredictConfig, RegionSpec, ScenesSpec
from wetmap.config.sections import DEFAULT_BANDS, DEFAULT_SCL_INVALID, CloudConfig, Strict, physical_bands
from wetmap.config.train import (
    DEFAULT_TERMS,
    LossConfig,
    LossOptions,
    LossTerm,
    ModelConfig,
    TrainConfig,
    TrainPrecision,
    TrainRunConfig,
    loss_option_keys,
)

__all__ = [
    "DEFAULT_BANDS", "DEFAULT_SCL_INVALID", "DEFAULT_TERMS", "ON_THE_FLY_KEYS", "CloudConfig", "DataConfig",
    "EvaluateConfig", "JobConfig", "LossConfig", "LossOptions", "LossTerm", "ModelConfig", "PredictConfig",
    "RegionSpec", "ScenesSpec", "SplitConfig", "Strict", "TileConfig", "TrainConfig", "TrainPrecision",
    "TrainRunConfig", "build", "dump", "load", "loss_option_keys", "parse_overrides", "physical_bands", "read_yaml",
]
