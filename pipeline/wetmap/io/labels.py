"""Label codes: which values of a label raster are which class, checked, never guessed.

By default a label raster holds the classes' own indexes (0 = other, 1 = wetland), 255 for
unknown, and its nodata value (also unknown). Anything else (a map coded 1 = other, 2 = wetland;
a land-cover map of classes 1-7; a float file whose nodata was never declared) is one error
naming the file and the values found: read as they are, such codes train a model that maps the
wrong class and reports a high validation Dice. Other codings are mapped explicitly, e.g.
`label_values: {wetland: [1], other: [0, 2, 3], unknown: [99]}` (CLI: `--label-map
"wetland=1;other=0,2,3;unknown=99"`), which is also how a land-cover map with a wetland class is
used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wetmap.errors import WetmapError

UNKNOWN = 255

@dataclass(frozen=True)
class LabelCodes:
    """Raw label value -> class index (or UNKNOWN); `values` empty means the classes' own indexes."""

    classes: tuple[str, ...] = ("other", "wetland")
    values: tuple[tuple[float, int], ...] = ()

    @classmethod
    def of(cls, classes: Sequence[str], label_values: Mapping[str, Sequence[float]] | None) -> LabelCodes:
        if not label_values:
            return cls(tuple(classes))
        pairs: dict[float, int] = {}
        for name, raws in label_values.items():
            if name != "unknown" and name not in classes:
                raise WetmapError(f"label_values: '{name}' is not a class ({', '.join(classes)}) nor 'unknown'")
            for raw in raws:
                if float(raw) in pairs:
                    raise WetmapError(f"label_values: the value {raw:g} is given to two classes")
                pairs[float(raw)] = UNKNOWN if name == "unknown" else list(classes).index(name)
        return cls(tuple(classes), tuple(sorted(pairs.items())))

    def check_nodata(self, nodata: float | None, name: str) -> None:
        """A file whose nodata value is also a class index says two things of one value: refused.

        (QGIS's rasterize, for one, marks 0 as nodata in a 0/1 wetland raster: read as no data,
        every negative would vanish and the model would learn that everything is wetland.)
        """
        if self.values or nodata is None or np.isnan(nodata):
            return
        if float(nodata).is_integer() and 0 <= nodata < len(self.classes):
            raise WetmapError(f"the file's nodata value {nodata:g} is also class {nodata:g} ({self.classes[int(nodata)]}); "
                              f"say which it is with --label-map, e.g. \"{self.classes[int(nodata)]}={nodata:g};...\" "
                              f"or \"unknown={nodata:g};...\" (config: label_values)", name)

    def table(self, nodata: float | None) -> dict[float, int]:
        """Every raw value allowed in a file with this nodata value, and its class."""
        table = dict(self.values) if self.values else {float(i): i for i in range(len(self.classes))}
        table.setdefault(float(UNKNOWN), UNKNOWN)
        if nodata is not None and not np.isnan(nodata):
            table.setdefault(float(nodata), UNKNOWN)
        return table

    def apply(self, raw: np.ndarray, nodata: float | None, name: str) -> np.ndarray:
        """uint8 classes of raw label values; a value with no class is an error naming `name`."""
        table = self.table(nodata)
        if raw.dtype == np.uint8 and not self.values and nodata in (None, UNKNOWN) and len(self.classes) < UNKNOWN:
            out = raw   # the usual file: classes, 255, nothing to translate; only check
            bad = (raw >= len(self.classes)) & (raw != UNKNOWN)
        else:
            out = np.full(raw.shape, UNKNOWN, np.uint8)
            known = np.isnan(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
            for value, index in table.items():
                hit = raw == value
                out[hit] = index
                known |= hit
            bad = ~known
        if bad.any():
            found = np.unique(raw[bad])
            shown = ", ".join(f"{v:g}" for v in found[:8]) + (", ..." if len(found) > 8 else "")
            allowed = ", ".join(f"{v:g}" for v in sorted(table))
            raise WetmapError(f"label values {shown} are not label codes (allowed: {allowed}, i.e. "
                              f"{'the mapped values' if self.values else 'class indexes of ' + '/'.join(self.classes)}"
                              ", 255 = unknown and the file's nodata); map them with --label-map, e.g. "
                              "\"wetland=2;other=1;unknown=0\" (config: label_values)", name)
        return out


def parse_label_map(text: str) -> dict[str, list[float]]:
    """--label-map "wetland=1;other=0,2,3;unknown=99" -> {"wetland": [1.0], ...}."""
    out: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        try:
            out[name.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise WetmapError(f"--label-map: '{part}' is not CLASS=VALUE[,VALUE...]") from None
        if not sep or not out[name.strip()]:
            raise WetmapError(f"--label-map: '{part}' is not CLASS=VALUE[,VALUE...]")
    return out
