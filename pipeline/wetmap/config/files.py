"""Config files: YAML read, `--set KEY=VALUE` and command-line options merged on top, validated.

Unknown keys and bad values are errors that name the file and the dotted key, because a typo in
a scheduled job's config must fail loudly, not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from wetmap.errors import WetmapError

M = TypeVar("M", bound=BaseModel)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise WetmapError(f"cannot set '{dotted}': '{key}' is not a section", "--set")
        node = child
    node[leaf] = value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ['train.epochs=3', ...] into a nested dict; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise WetmapError(f"override '{pair}' is not KEY=VALUE", "--set")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise WetmapError("config file not found", path) from None
    except OSError as exc:
        raise WetmapError(f"cannot read config: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WetmapError(f"not valid YAML{where}", path) from None
    if not isinstance(data, dict):
        raise WetmapError("a config must be a mapping of keys to values", path)
    return data


def build(model: type[M], data: dict[str, Any], source: str | Path = "config",
          overrides: dict[str, Any] | None = None, sets: dict[str, Any] | None = None) -> M:
    """Validate `data` + `sets` (from --set) + `overrides` (from other options) into `model`; the
    first problem becomes a one-line error naming where the bad key came from."""
    try:
        return model.model_validate(_merge(_merge(data, sets or {}), overrides or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        key = ".".join(part for part in loc if part != "[key]") or "(top level)"
        if _holds(overrides, loc):
            source = "command line"
        elif _holds(sets, loc):
            source = "--set"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _section_keys(model, loc[:-1]), n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise WetmapError(f"unknown key '{key}'{hint}", source) from None
        if err["type"] == "missing":
            raise WetmapError(f"missing key '{key}'", source) from None
        message = err["msg"].removeprefix("Value error, ")
        raise WetmapError(f"bad value for '{key}': {message}", source) from None


def _section_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys of the config section at `loc` (empty where `loc` does not lead to a section)."""
    section: Any = model
    for part in loc:
        field = section.model_fields.get(part) if isinstance(section, type) and issubclass(section, BaseModel) else None
        if field is None:
            return []
        section = next((a for a in (field.annotation, *typing.get_args(field.annotation))
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else []


def _holds(tree: dict[str, Any] | None, loc: list[str]) -> bool:
    """Whether the nested dict `tree` sets the key at `loc` (or a section above it)."""
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def load(model: type[M], path: str | Path | None, overrides: dict[str, Any] | None = None,
         sets: list[str] | tuple[str, ...] = ()) -> M:
    """Load a stage config from a YAML file (or defaults when `path` is None), with the
    command line's `--set KEY=VALUE` pairs and other options (`overrides`) on top."""
    data = read_yaml(path) if path is not None else {}
    return build(model, data, path if path is not None else "config", overrides, parse_overrides(sets))


def dump(config: BaseModel) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a config (paths as strings), for bundles and manifests."""
    return config.model_dump(mode="json")
