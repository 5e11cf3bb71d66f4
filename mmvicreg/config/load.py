"""Reading a run configuration: YAML + ``dotted.key=value`` overrides, parsed once into the typed sections.

Hand-written over dataclasses rather than a config framework because the checks we need are specific: the
nearest valid key in every error, and ``data.*`` sections whose valid keys depend on their ``format``
(overriding ``data.train.format`` on the command line drops the keys that only the old format had).

:func:`load_config` reads, applies the overrides, makes every section (unknown keys and wrong types named; each
section and sub-spec checks its own rules as it is made) and runs the rules across sections
(:func:`mmvicreg.config.checks.check_config`): a mistake of any kind is reported here, before any data is read
or any network is built. :func:`parse_branches` is the same parser for branches given in Python as mappings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from mmvicreg.choices import did_you_mean
from mmvicreg.config.checks import FormatKeys, check_branches, check_config
from mmvicreg.config.schema import BranchConfig, RunConfig
from mmvicreg.config.keys import RENAMED_KEYS, data_format_keys
from mmvicreg.config.specs import ConfigError, encoder_checks


def _nearest(key: str, valid: list[str], prefix: str = "") -> str:
    return did_you_mean(key, valid, prefix=prefix) or f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats; a type with a ``parse``
    classmethod (a branch sub-spec) parses its own value."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if tp is Any:
        return value
    if isinstance(tp, type) and callable(getattr(tp, "parse", None)):
        return tp.parse(value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads an unquoted no/yes (off/on) as a boolean
        value = "yes" if value else "no"
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    expected = "a number" if tp is float else getattr(tp, "__name__", tp)
    raise ConfigError(f"{key} must be {expected}, got {type(value).__name__} {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted in RENAMED_KEYS:
            raise ConfigError(f"config key {dotted!r} is now {RENAMED_KEYS[dotted]!r} (the same values); rename it")
        if key not in names:  # the suggestion keeps the section: train.max_step -> train.max_steps
            section = f"{prefix}." if prefix else ""
            raise ConfigError(f"unknown config key {dotted!r}{_nearest(str(key), names, section)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def parse_branch(values: Any, where: str = "branch") -> BranchConfig:
    """One branch section given as a mapping (a :class:`BranchConfig` is returned as it is): unknown keys, wrong
    types and bad sub-specs are named from ``where`` (``branches.image``)."""
    if isinstance(values, BranchConfig):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping (encoder, expander, field, ...), got {values!r}")
    return _build(BranchConfig, values, where)


def parse_branches(branches: Mapping[str, Any]) -> dict[str, BranchConfig]:
    """``{name: BranchConfig or mapping}`` -> ``{name: BranchConfig}``, for builders called from Python.

    Branches that are all :class:`BranchConfig` (as :func:`load_config` made them) are taken as checked; when any
    is a mapping, each is parsed (:func:`parse_branch`) and the branches' rules run
    (:func:`mmvicreg.config.checks.check_branches`), once, here.
    """
    if all(isinstance(b, BranchConfig) for b in branches.values()):
        return dict(branches)
    parsed = {name: parse_branch(b, f"branches.{name}") for name, b in branches.items()}
    check_branches(parsed)
    return parsed


def parse_override(text: str) -> tuple[str, Any]:
    """``train.batch_size=64`` -> ``("train.batch_size", 64)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like dotted.key=value (e.g. train.batch_size=64)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _read_tree(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return yaml.safe_load(yaml.safe_dump(source))  # a deep copy
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:  # PyYAML's own message spans several lines; keep the cause and the place
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {what}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level")
    return tree


def load_config(
    source: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    format_keys: FormatKeys | None = data_format_keys,
    check_encoders: bool = True,
) -> RunConfig:
    """Read a YAML file (or a dict), apply overrides, parse every section and check every rule.

    ``format_keys(format)`` gives the option names a data format accepts (None for an unknown format; default:
    :func:`mmvicreg.config.keys.data_format_keys`, the data builders' options); it checks the ``data.*`` options
    and lets a ``data.<section>.format=...`` override drop the options that only the previous format had.
    ``check_encoders=False`` skips the encoders' check of names and options (which imports torch): a quick first
    read that reports every other mistake. Raises :class:`ConfigError` (one line, naming the dotted key) for the
    first problem found.
    """
    with encoder_checks(check_encoders):
        return _load(source, overrides, format_keys)


def _load(
    source: str | Path | dict[str, Any], overrides: list[str] | None, format_keys: FormatKeys | None
) -> RunConfig:
    tree = _read_tree(source)
    for text in overrides or []:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "data" and parts[2] == "format" and format_keys is not None:
            section = tree.get("data", {}).get(parts[1])
            if isinstance(section, dict) and section.get("format") != value:
                keep = (format_keys(str(value)) or set()) | {"format"}
                explicit = {o.split("=", 1)[0].split(".")[2] for o in overrides or [] if o.startswith(f"data.{parts[1]}.")}
                tree["data"][parts[1]] = {k: v for k, v in section.items() if k in keep or k in explicit}
        _set_dotted(tree, key, value)
    config = _build(RunConfig, tree)
    check_config(config, format_keys)
    return config


def validate(config: RunConfig, format_keys: FormatKeys | None = data_format_keys) -> None:
    """The rules across sections (:func:`mmvicreg.config.checks.check_config`), for a ``RunConfig`` made in
    Python; each section checked its own rules when it was made."""
    check_config(config, format_keys)


def config_yaml(config: RunConfig) -> str:
    """``config`` as YAML, every key present (defaults filled in): read back, it gives the same config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def dump_config(config: RunConfig, path: Path) -> None:
    """Write ``config`` as YAML to ``path`` (atomically)."""
    from mmvicreg.files import atomic_write_text

    atomic_write_text(path, config_yaml(config))
