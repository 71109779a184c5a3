"""Settings of training: the network, the loss and its options, the trainer, one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from wetmap.config.data import DataConfig
from wetmap.config.sections import Strict

TrainPrecision = Literal["32-true", "16-mixed", "bf16-mixed"]   # Lightning's names for the trainer


class ModelConfig(Strict):
    """The network: architecture, encoder, pretrained weights and input channels."""

    arch: Literal["unet", "deeplabv3+", "fcn"] = "unet"
    backbone: str = "resnet18"
    # A local weights file (wetmap.model.pretrained): a wetmap bundle, a checkpoint or an encoder's
    # state dict; never a download. Its input bands (default by its channel count: 13 Sentinel-2
    # L1C, 12 L2A, 3 RGB) and, for a state dict, the normalisation it was trained with.
    weights: str | None = None
    weights_bands: list[str] | None = None
    weights_mean: list[float] | None = None
    weights_std: list[float] | None = None
    classes: list[str] = Field(default_factory=lambda: ["other", "wetland"], min_length=2)
    # Spectral indices computed from the bands in the input step (wetmap.model.inputs), extra channels.
    indices: list[str] = Field(default_factory=list)
    # The clear mask as one more input channel (1 clear, 0 cloud / shadow / no data).
    clear_channel: bool = False

    @field_validator("indices")
    @classmethod
    def _known_indices(cls, value: list[str]) -> list[str]:
        from wetmap.bands import INDICES

        names = [str(v).upper() for v in value]
        unknown = [n for n in names if n not in INDICES]
        if unknown:
            raise ValueError(f"unknown index {unknown[0]!r} (known: {', '.join(INDICES)})")
        if len(set(names)) != len(names):
            raise ValueError("an index is named twice")
        return names

    @model_validator(mode="after")
    def _known_backbone(self) -> ModelConfig:
        """U-Net and DeepLabV3+ take a segmentation-models-pytorch encoder (or `tu-` + a timm model)."""
        if self.arch == "fcn":
            return self
        import segmentation_models_pytorch as smp

        name = self.backbone
        if name.startswith("tu-"):
            import timm

            if not timm.is_model(name[3:]):
                raise ValueError(f"backbone {name!r}: {name[3:]!r} is not a timm model")
        elif name not in smp.encoders.get_encoder_names():
            close = [n for n in smp.encoders.get_encoder_names() if n.startswith(name.rstrip("0123456789"))][:6]
            raise ValueError(f"unknown backbone {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return self


LossTerm = Literal["dice", "generalized_dice", "tversky", "focal", "bce", "ce"]
DEFAULT_TERMS: dict[LossTerm, float] = {"dice": 0.5, "bce": 0.5}
_OVERLAP_KEYS = {"from_logits", "smooth_nr", "smooth_dr", "squared", "batch", "include_background",
                 "average", "class_weights", "jaccard", "temperature"}


def loss_option_keys(name: str) -> set[str]:
    """The options loss term `name` takes (`wetmap.train.losses` passes each term only these)."""
    if name in ("focal", "bce", "ce"):
        return {"from_logits", "temperature"} | ({"gamma", "alpha"} if name == "focal" else set())
    return _OVERLAP_KEYS | {"generalized_dice": {"w_type"}, "tversky": {"alpha", "beta"}}.get(name, set())


class LossOptions(Strict):
    """Options of the loss terms, typed: a misspelt option or a wrong type is an error. Unset
    options keep the loss's own defaults (see README, Losses)."""

    from_logits: bool | None = None
    smooth_nr: float | None = Field(None, ge=0)
    smooth_dr: float | None = Field(None, ge=0)
    squared: bool | None = None
    batch: bool | None = None
    include_background: bool | None = None
    average: Literal["macro", "micro"] | None = None
    class_weights: list[float] | None = None
    jaccard: bool | None = None
    temperature: float | None = Field(None, gt=0)
    w_type: Literal["square", "simple", "uniform"] | None = None   # generalized_dice
    alpha: float | list[float] | None = None                       # tversky (FP weight), focal (class weight)
    beta: float | None = None                                      # tversky (FN weight)
    gamma: float | None = Field(None, ge=0)                        # focal
    terms: dict[LossTerm, float] | None = None                     # composite: loss name -> weight

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumped (into run configs and bundles) as the user wrote them: unset options left out."""
        return {key: value for key, value in handler(self).items() if value is not None}

    def given(self) -> dict[str, Any]:
        """The options set (to something other than null), as keyword arguments of the loss."""
        return self.model_dump()


class LossConfig(Strict):
    """The training loss and whether cloudy / unlabelled pixels are masked out of it."""

    name: Literal[LossTerm, "composite"] = "dice"
    masked: bool = True
    options: LossOptions = Field(default_factory=LossOptions)

    @model_validator(mode="after")
    def _options_of_this_loss(self) -> LossConfig:
        """Refuse an option no term of the loss takes: `alpha` of a Dice loss would otherwise be
        dropped without a word."""
        given = self.options.given()
        if self.name == "composite":
            terms = given.get("terms", DEFAULT_TERMS)
            if not terms:
                raise ValueError("options.terms must map loss names to weights, e.g. {dice: 0.5, bce: 0.5}")
            allowed = {"terms"}.union(*(loss_option_keys(t) for t in terms))
        else:
            allowed = loss_option_keys(self.name)
        bad = sorted(set(given) - allowed)
        if bad:
            raise ValueError(f"options.{bad[0]} is not an option of the {self.name} loss "
                             f"(it takes {', '.join(sorted(allowed))})")
        return self


class TrainConfig(Strict):
    """Optimisation and the trainer: epochs, batches, learning rate, devices, precision."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # Early stopping: epochs without a better validation Dice (default: a third of the epochs, at least 5).
    patience: int | None = Field(None, ge=1)
    # none | dihedral (flips, 90° rotations) | full (dihedral + per-band brightness / contrast jitter)
    augment: Literal["none", "dihedral", "full"] = "dihedral"
    jitter: float = Field(0.1, ge=0, le=1, description="full: largest contrast change and brightness shift, in std")
    # uniform: every chip once per epoch; balanced: chips with and without wetland equally often.
    sampling: Literal["uniform", "balanced"] = "uniform"
    # The resume point (last.ckpt, with optimiser state) is written at most this often, and when
    # training ends; 0: after every epoch. The best weights are written only when they improve.
    checkpoint_minutes: float = Field(5.0, ge=0)
    # Binary models: the probability threshold of the class map is the one with the best
    # validation Dice (recorded in the bundle); false: 0.5.
    calibrate_threshold: bool = True
    # Masked-reconstruction pretraining on every stored chip, labelled or not (wetmap.train.pretrain;
    # a chip store cut with --unlabelled), before the supervised epochs; 0: none.
    pretrain_epochs: int = Field(0, ge=0)
    pretrain_mask: float = Field(0.5, gt=0, lt=1, description="share of squares hidden")
    pretrain_patch: int = Field(8, ge=1, description="side of a hidden square, px")
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"  # e.g. "ddp" for several GPUs
    precision: TrainPrecision | None = None
    num_workers: int = Field(0, ge=0)


class TrainRunConfig(Strict):
    """One training run (configs/train.yaml): data, model, loss, trainer and output folder."""

    seed: int = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: Path = Path("runs/train")

    @model_validator(mode="after")
    def _indices_computable(self) -> TrainRunConfig:
        from wetmap.bands import check_indices

        check_indices(self.model.indices, self.data.bands)
        return self
