"""Class names, colours and QGIS styles, so every output opens in QGIS looking right at once."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

CLASS_NAMES = ["other", "wetland"]

CLASS_COLORS: dict[int, tuple[int, int, int, int]] = {
    0: (236, 229, 206, 255),   # other: pale sand
    1: (31, 138, 112, 255),    # wetland: marsh teal-green
    255: (0, 0, 0, 0),         # nodata / cloud: transparent
}


def _hex(rgba: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


def paletted_qml(names: list[str] | dict[int, str], colors: Mapping[int, tuple[int, ...]], nodata: int = 255) -> str:
    """A QGIS raster style: paletted renderer with one labelled entry per class (`names` by value,
    or a list for values 0, 1, ...); a colour's fourth component is its alpha."""
    by_value = names if isinstance(names, dict) else dict(enumerate(names))
    entries = "\n".join(
        f'        <paletteEntry value="{value}" color="{_hex(colors.get(value, (128, 128, 128)))}" '
        f'alpha="{(colors.get(value, (0, 0, 0, 255)) + (255,))[3]}" label={quoteattr(name)}/>'
        for value, name in by_value.items() if value != nodata
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.34" styleCategories="AllStyleCategories">
  <pipe>
    <provider><resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/></provider>
    <rasterrenderer type="paletted" band="1" opacity="1" nodataColor="" alphaBand="-1">
      <rasterTransparency><singleValuePixelList><pixelListEntry min="{nodata}" max="{nodata}" percentTransparent="100"/></singleValuePixelList></rasterTransparency>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def probability_qml(nodata: int = 255) -> str:
    """A QGIS raster style for wetland probability in percent: transparent to wetland green."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.34" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" classificationMin="0" classificationMax="100">
      <rasterTransparency><singleValuePixelList><pixelListEntry min="{nodata}" max="{nodata}" percentTransparent="100"/></singleValuePixelList></rasterTransparency>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="0" maximumValue="100">
          <item value="0" color="#f7fcf5" alpha="0" label="0 %"/>
          <item value="50" color="#74c476" alpha="160" label="50 %"/>
          <item value="100" color="#1f8a70" alpha="255" label="100 %"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def embed_style(gpkg: str | Path, layer: str, qml: str) -> None:
    """Store `qml` as `layer`'s default style in the GeoPackage's `layer_styles` table, which QGIS
    reads when it opens the layer (the table QGIS itself writes with "Save as default").

    Why not a .qml beside the file: OUT.gpkg and OUT.tif share one sidecar name, OUT.qml, and
    the polygons' style replaced the class raster's legend.
    """
    import pandas as pd
    import pyogrio

    geometry = pyogrio.read_info(gpkg, layer=layer).get("geometry_name") or "geom"
    row = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": layer, "f_geometry_column": geometry,
           "styleName": layer, "styleQML": qml, "styleSLD": "", "useAsDefault": True,
           "description": "wetmap", "owner": "", "ui": "", "update_time": pd.Timestamp.now(tz="UTC")}
    pyogrio.write_dataframe(pd.DataFrame([row]), gpkg, layer="layer_styles", driver="GPKG",
                            append="layer_styles" in pyogrio.list_layers(gpkg)[:, 0], layer_options={"FID": "id"})


# Dice classes for region maps: the QGIS style and the report's figures use the same bins and colours.
DICE_BINS: list[tuple[float, float, tuple[int, int, int]]] = [
    (0.0, 0.5, (215, 48, 39)),
    (0.5, 0.7, (252, 141, 89)),
    (0.7, 0.8, (254, 224, 139)),
    (0.8, 0.9, (145, 207, 96)),
    (0.9, 1.0, (26, 152, 80)),
]

UNDEFINED_COLOR = (170, 170, 170)


def dice_color(dice: float | None) -> tuple[int, int, int]:
    """The colour of a Dice value in DICE_BINS; grey where undefined (no clear pixel)."""
    if dice is None or math.isnan(dice):
        return UNDEFINED_COLOR
    for _low, high, color in DICE_BINS:
        if dice < high:
            return color
    return DICE_BINS[-1][2]


def _fill_symbol(name: int, rgb: tuple[int, ...], style: str = "solid") -> str:
    color = ",".join(map(str, rgb))
    return f"""      <symbol type="fill" name="{name}" alpha="0.6" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option type="QString" name="color" value="{color},255"/>
            <Option type="QString" name="style" value="{style}"/>
            <Option type="QString" name="outline_color" value="40,40,40,255"/>
            <Option type="QString" name="outline_style" value="solid"/>
            <Option type="QString" name="outline_width" value="0.5"/>
            <Option type="QString" name="outline_width_unit" value="MM"/>
          </Option>
        </layer>
      </symbol>"""


def dice_qml(label: str = "wetland", field: str = "dice") -> str:
    """A QGIS vector style: regions filled by Dice class (red to green), undefined hatched grey,
    labelled with name and Dice."""
    q = f"&quot;{field}&quot;"
    rules, symbols = [], []
    for i, (low, high, rgb) in enumerate(DICE_BINS):
        last = i == len(DICE_BINS) - 1
        cond = f"{q} &gt;= {low} AND {q} {'&lt;=' if last else '&lt;'} {high}"
        rules.append(f'      <rule key="dice{i}" symbol="{i}" label={quoteattr(f"{label} Dice {low:.1f}–{high:.1f}")} '
                     f'filter="{cond}"/>')
        symbols.append(_fill_symbol(i, rgb))
    n = len(DICE_BINS)
    rules.append(f'      <rule key="undefined" symbol="{n}" label="Dice undefined (no clear pixel)" filter="{q} IS NULL"/>')
    symbols.append(_fill_symbol(n, UNDEFINED_COLOR, "b_diagonal"))
    label_expr = f"concat(&quot;name&quot;, '\\n', coalesce(format_number({q}, 2), 'n/a'))"
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.34" styleCategories="Symbology|Labeling" labelsEnabled="1">
  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">
    <rules key="root">
{chr(10).join(rules)}
    </rules>
    <symbols>
{chr(10).join(symbols)}
    </symbols>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="{label_expr}" isExpression="1" fontSize="9" textColor="20,20,20,255" fontWeight="75">
        <text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM" bufferColor="255,255,255,255"/>
      </text-style>
      <placement placement="1" overrunDistance="0"/>
      <rendering obstacle="1" limitNumLabels="0"/>
    </settings>
  </labeling>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
</qgis>
"""


def polygon_qml(rgba: tuple[int, ...]) -> str:
    """A QGIS vector style: polygons filled in one colour (e.g. wetland green) with a dark outline."""
    fill = _fill_symbol(0, tuple(rgba[:3])).replace('alpha="0.6"', 'alpha="0.85"')
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.34" styleCategories="Symbology">
  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
{fill}
    </symbols>
  </renderer-v2>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""
