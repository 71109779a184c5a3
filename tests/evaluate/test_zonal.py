"""The zonal counting kernel against GDAL's rasterize (the pixel-centre rule) and numpy counts."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine

from wetmap.evaluate.zonal import ZonalCounter, code_table
from wetmap.io.windows import blocks

TRANSFORM = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_500_000.0)
HEIGHT, WIDTH = 300, 257


def awkward_regions(rng: np.random.Generator) -> list[shapely.Geometry]:
    """Wobbly polygons, one with a hole, a multipolygon, one past the raster edge, one covering
    everything, one far outside, and an empty one."""
    def blob(cx: float, cy: float, radius: float) -> shapely.Polygon:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
        r = radius * rng.uniform(0.6, 1.0, 40)
        return shapely.Polygon(np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)])

    x0, y0 = TRANSFORM.c, TRANSFORM.f
    holed = blob(x0 + 1200, y0 - 1500, 900).difference(shapely.Point(x0 + 1200, y0 - 1500).buffer(300))
    multi = shapely.MultiPolygon([blob(x0 + 500, y0 - 500, 400), blob(x0 + 2000, y0 - 2500, 450)]).buffer(0)
    return [blob(x0 + 1300, y0 - 1400, 1200), holed, multi, blob(x0 + 2500, y0 - 300, 800),
            shapely.box(x0 - 100, y0 - 3100, x0 + 2700, y0 + 50), shapely.box(0, 0, 1, 1), shapely.Polygon()]


@pytest.mark.parametrize("k", [2, 3])          # the binary kernel and the histogram kernel
@pytest.mark.parametrize("with_clear", [False, True])
@pytest.mark.parametrize("block", [64, 1024])
def test_counts_match_rasterize_and_numpy(k: int, with_clear: bool, block: int) -> None:
    rng = np.random.default_rng(k * 10 + with_clear)
    pred = rng.integers(0, k, (HEIGHT, WIDTH)).astype(np.uint8)
    truth = rng.integers(0, k, (HEIGHT, WIDTH)).astype(np.uint8)
    pred[rng.random(pred.shape) < 0.05] = 255
    truth[rng.random(truth.shape) < 0.05] = 255
    clear = rng.random(pred.shape) < 0.9 if with_clear else None
    geoms = awkward_regions(rng)

    counter = ZonalCounter(geoms, TRANSFORM, k)
    for w in blocks(WIDTH, HEIGHT, block):
        rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        counter.add(pred[rows, cols], truth[rows, cols], None if clear is None else clear[rows, cols],
                    w.row_off, w.col_off, np.arange(len(geoms)))

    codes = code_table(k)[np.minimum(pred, k), np.minimum(truth, k)]
    if clear is not None:
        codes = np.where(clear, codes, k * k)
    for i, geom in enumerate(geoms):
        inside = (rasterio.features.geometry_mask([geom], pred.shape, TRANSFORM, invert=True)
                  if not geom.is_empty else np.zeros(pred.shape, bool))
        expected = np.bincount(codes[inside], minlength=k * k + 2)
        assert counter.counts[i].tolist() == expected.tolist(), f"region {i}"
    assert counter.counts[4].sum() == HEIGHT * WIDTH     # the box over everything sees every pixel once
    assert counter.counts[5:].sum() == 0


def test_code_table_marks_no_data_before_unknown_truth() -> None:
    table = code_table(2)
    assert table[:2, :2].tolist() == [[0, 2], [1, 3]]     # [pred, truth] -> truth * k + pred
    assert table[2].tolist() == [4, 4, 4]                 # prediction no data: masked, whatever the truth
    assert table[:2, 2].tolist() == [5, 5]                # truth unknown


def test_a_boundary_with_many_crossings_per_row_matches_rasterize() -> None:
    """A comb: dozens of crossings on every row (the sorted path, not the insertion sort)."""
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    teeth = shapely.union_all([shapely.box(x0 + 60 * i + 3, y0 - 2900, x0 + 60 * i + 37, y0 - 100) for i in range(40)])
    comb = shapely.union_all([teeth, shapely.box(x0, y0 - 2990, x0 + 2570, y0 - 2900)]).buffer(0)
    pred = np.ones((HEIGHT, WIDTH), np.uint8)
    counter = ZonalCounter([comb], TRANSFORM, 2)
    counter.add(pred, pred, None, 0, 0, np.array([0]))
    inside = rasterio.features.geometry_mask([comb], pred.shape, TRANSFORM, invert=True)
    assert counter.counts[0, 3] == inside.sum() and counter.counts[0].sum() == inside.sum()
