"""Class names, colours and QGIS styles, so every output opens in QGIS looking right at once."""

from __future__ import annotations

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


def paletted_qml(names: list[str], colors: dict[int, tuple[int, ...]], nodata: int = 255) -> str:
    """A QGIS raster style: paletted renderer with one labelled entry per class."""
    entries = "\n".join(
        f'        <paletteEntry value="{value}" color="{_hex(colors.get(value, (128, 128, 128)))}" '
        f'alpha="255" label={quoteattr(name)}/>'
        for value, name in enumerate(names)
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


def write_qml(raster_path: str | Path, text: str) -> Path:
    """Write the style beside the raster (same name, .qml): QGIS applies it when it opens the file."""
    path = Path(raster_path).with_suffix(".qml")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
