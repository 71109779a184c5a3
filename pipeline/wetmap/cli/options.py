"""Options shared by several `wetmap` commands, defined once, and the parsing of their values."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

console = Console(stderr=False, highlight=False, soft_wrap=True)  # long paths stay on one line in logs
F = TypeVar("F", bound=Callable[..., Any])


def quiet_libraries() -> None:
    """Keep library chatter (tips, deprecations) out of a scheduler's log; our summary remains."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    # train --overwrite replaces its run folder's logs and checkpoints on purpose
    warnings.filterwarnings("ignore", message=".*directory .* exists and is not empty.*")


quiet_option = click.option("-q", "--quiet", is_flag=True,
                            help="No progress: neither the bar (on a terminal) nor the once-a-minute line (in a log).")
overrides_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                                 help="Override a config value, e.g. --set train.epochs=5 (repeatable).")


def scale_options(fn: F) -> F:
    """--workers / --scheduler: where the Dask work of a command runs."""
    fn = click.option("--scheduler", metavar="ADDRESS", help="Join a running Dask cluster (tcp://host:8786).")(fn)
    return click.option("--workers", type=click.IntRange(1, 512), help="Run on a local Dask cluster of N processes.")(fn)


SCENE_HELP = ("A scene: GeoTIFF / COG / VRT, Sentinel-2 SAFE folder or .zip, Landsat C2 folder or MTL, "
              "STAC item (file or URL), folder of band files; local, s3:// or https://.")
CLOUDS_HELP = ("Cloud mask: 'auto' (the default: the product's own SCL / QA_PIXEL, else the cloud detector), "
               "'detect' (the detector even where the product has a mask), 'none', or a mask file "
               "(SCL, QA_PIXEL, 0/1 raster, or a `wetmap clouds` map).")
level_option = click.option("--level", type=click.Choice(["L1C", "L2A"]),
                            help="Processing level for the cloud detector where the scene does not say "
                                 "(a plain GeoTIFF): top of atmosphere (L1C) or surface reflectance (L2A).")
bands_option = click.option("--bands", "band_names", metavar="B02,B03,...",
                            help="Name a stacked raster's bands, in order (for files without band descriptions).")


label_map_option = click.option("--label-map", "label_map_text", metavar='"wetland=2;other=1;unknown=0"',
                                help="How the label raster's values map to classes (default: they are the class "
                                     "indexes, 0 other, 1 wetland, 255 unknown).")


def label_map(text: str | None) -> dict[str, list[float]] | None:
    """--label-map's text as label codes per class."""
    from wetmap.io.labels import parse_label_map

    return parse_label_map(text) if text else None


def names(text: str | None) -> list[str] | None:
    """A comma-separated list (--bands)."""
    return [b.strip() for b in text.split(",") if b.strip()] if text else None




def crs_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--crs checked when the command line is read, before any work: one line naming the flag."""
    if value is not None:
        from wetmap.io.raster import parse_crs

        parse_crs(value, "--crs")
    return value


def given(**values: Any) -> dict[str, Any]:
    """The options the user gave (not None), as config overrides: a flag left out keeps the
    config file's value, or the default."""
    return {key: value for key, value in values.items() if value is not None}
