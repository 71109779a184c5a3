"""Namespace-blind reading of product metadata XML (ESA's MTD files, USGS's MTL.xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from wetmap.errors import WetmapError


def parse(data: bytes, name: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise WetmapError(f"not valid XML ({exc})", name) from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def find_all(root: ET.Element, tag: str) -> list[ET.Element]:
    return [el for el in root.iter() if local(el.tag) == tag]


def text(root: ET.Element, tag: str) -> str | None:
    found = find_all(root, tag)
    return found[0].text.strip() if found and found[0].text else None
