"""What `wetmap tile` says when chips are missing: why no training chip was kept, and why a
split came out empty, in words that name the file to look at and the setting to change.

Without these, a 100 %-cloud scene, all-unknown labels and regions beside the scene all read
"no training chip was kept; lower --min-valid", and an empty validation split (a 1024 px split
block on a 512 px scene) was silent until `train` failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from wetmap.config import TileConfig
from wetmap.io.windows import TileGrid


def _share(rows: Sequence[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else 0.0


def no_chip_kept(rows: Sequence[dict[str, Any]], cfg: TileConfig, mask: str) -> str:
    """Why no training chip was kept, naming the file that explains it, with the fractions.

    `rows` are the tiles' index rows (split, clear_fraction, labelled_fraction, valid_fraction);
    `mask` says which cloud mask was used."""
    if rows and all(r["split"] == "none" for r in rows):
        return f"{cfg.split.regions}: no tile of the scene {cfg.image} lies in a split region (they do not overlap)"
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        return (f"{cfg.image}: no tile fell to the train split ({len(rows)} tiles, "
                f"{sum(r['split'] == 'buffer' for r in rows)} dropped as buffer between splits)")
    clear, labelled = _share(train, "clear_fraction"), _share(train, "labelled_fraction")
    if clear == 0:
        return f"{mask}: no clear pixel in the train tiles: the scene {cfg.image} is all cloud, shadow or no data"
    if labelled == 0:
        return f"{cfg.labels}: no labelled pixel in the train tiles: every label is unknown (255 or the file's nodata)"
    best = max(r["valid_fraction"] for r in train)
    return (f"{cfg.image}: no train tile has {cfg.min_valid:.0%} clear, labelled pixels (best {best:.1%}; "
            f"train tiles are {clear:.1%} clear by {mask} and {labelled:.1%} labelled by {cfg.labels}): "
            "lower --min-valid")


def _blocks(tiles: TileGrid, block: int) -> int:
    return math.ceil(tiles.width / block) * math.ceil(tiles.height / block)


def empty_splits(rows: Sequence[dict[str, Any]], tiles: TileGrid, cfg: TileConfig,
                 region_values: Sequence[str] | None) -> dict[str, str]:
    """The splits that kept no chip although training needs them (val) or the config asks for
    them (test), each with the reason. `region_values` are the regions' split names when they
    were read from a field, None for a block split or a random draw per region."""
    wanted = {"val": True, "test": cfg.split.test > 0 if region_values is None else "test" in region_values}
    reasons = {}
    for split, needed in wanted.items():
        if not needed or any(r["kept"] and r["split"] == split for r in rows):
            continue
        tiles_in = [r for r in rows if r["split"] == split]
        share = cfg.split.val if split == "val" else cfg.split.test
        if tiles_in:
            reasons[split] = (f"its {len(tiles_in)} tiles have too few clear, labelled pixels "
                              f"(best {max(r['valid_fraction'] for r in tiles_in):.1%}, --min-valid "
                              f"{cfg.min_valid:.0%})")
        elif cfg.split.regions is None:
            block = cfg.split.block
            blocks = _blocks(tiles, block)
            smaller = block
            while smaller // 2 >= max(32, cfg.size) and _blocks(tiles, smaller) * share < 0.5:
                smaller //= 2
            reasons[split] = (f"the {tiles.width} x {tiles.height} px scene holds {blocks} split block"
                              f"{'s' if blocks != 1 else ''} of {block} px, and {share:.0%} of {blocks} rounds to 0: "
                              f"lower split.block (e.g. --set split.block={smaller})")
        elif region_values is None:
            reasons[split] = (f"regions of {cfg.split.regions} were drawn at random and none fell to {split}: "
                              "give them a split field (split.region_field) holding train / val / test")
        elif split not in region_values:
            reasons[split] = f"no region of {cfg.split.regions} has {cfg.split.region_field} = {split}"
        else:
            reasons[split] = f"the regions of {cfg.split.regions} marked {split} do not overlap the scene"
    return reasons
