"""Every config key, read off the typed schema: its dotted name, type, default, allowed values and meaning.

:func:`schema_keys` walks :class:`~mmvicreg.config.schema.RunConfig` (a branch's keys under ``branches.NAME``, its
``transform`` keys under ``branches.NAME.transform``); ``docs/CONFIG.md`` is made from it
(:mod:`mmvicreg.cli.config_reference`), and the command line uses it to answer a flag that is really a config key
(:func:`flag_hint`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Iterator

from mmvicreg.choices import nearest
from mmvicreg.config.keys import KEY_CHOICES, KEY_HELP
from mmvicreg.config.schema import BranchConfig, RunConfig
from mmvicreg.config.specs import TRANSFORM_DEFAULTS, EncoderSpec, ExpanderSpec, TransformConfig

# the types a reader sees, for the annotations that are not plain
_TYPE_NAMES = {EncoderSpec: "name or mapping", ExpanderSpec: "widths", TransformConfig: "mapping"}
_NESTED = {"branches": BranchConfig, "branches.NAME.transform": TransformConfig}


@dataclass(frozen=True)
class KeyInfo:
    """One config key: ``key`` (dotted; ``NAME`` stands for a branch's name), ``type``, ``default``, the
    allowed ``choices`` (empty: any value of the type) and ``help`` (one line). ``weights_first``: left out, the
    key takes the encoder's weights' value before ``default`` (a branch's ``transform`` keys)."""

    key: str
    type: str
    default: Any
    choices: tuple[str, ...]
    help: str
    weights_first: bool = False


def type_name(tp: Any) -> str:
    """``Optional[int]`` -> ``"int or null"``; ``list[str]`` -> ``"list of str"``; a mapping -> ``"mapping"``."""
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if type(None) in typing.get_args(tp):  # Optional[X] and X | None
        return f"{type_name(args[0])} or null"
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is float:
        return "number"
    return getattr(tp, "__name__", str(tp))


def _default(cls: type, f: dataclasses.Field) -> Any:
    if cls is TransformConfig:  # its fields default to None: "not given"; the value used is the resolved one
        return TRANSFORM_DEFAULTS[f.name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _walk(cls: type, prefix: str) -> Iterator[KeyInfo]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type) and key not in _NESTED:
            yield from _walk(tp, f"{key}.")
            continue
        yield KeyInfo(key, type_name(tp), _default(cls, f), tuple(KEY_CHOICES.get(key, ())), KEY_HELP.get(key, ""),
                      weights_first=cls is TransformConfig)
        if key in _NESTED:
            yield from _walk(_NESTED[key], f"{key}.NAME." if key == "branches" else f"{key}.")


def schema_keys() -> list[KeyInfo]:
    """Every key of the run config, in the order a config file writes them."""
    return list(_walk(RunConfig, ""))


def flag_hint(flag: str, value: str | None = None) -> str | None:
    """The one line for a ``--flag`` given to a command that takes ``dotted.key=value`` overrides: the config key
    it looks like (``--max-steps 100`` -> ``train.max_steps=100``), or None when it looks like none."""
    if flag in ("--config", "-c"):
        return "the config file is the first argument, not a flag: mmvicreg train CONFIG.yaml [dotted.key=value ...]"
    name, _, given = flag.lstrip("-").partition("=")
    leaf = name.replace("-", "_")
    value = given or value or "VALUE"
    keys = [k.key for k in schema_keys() if "NAME" not in k.key]
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == leaf or k == leaf]
    if not matches:
        near = nearest(leaf, [k.rsplit(".", 1)[-1] for k in keys])
        if not near:
            return None
        matches = [k for k in keys if k.rsplit(".", 1)[-1] == near[0]]
    forms = " or ".join(f"{k}={value}" for k in matches)
    return f"{flag} is not a flag: set config keys as dotted.key=value overrides, e.g. {forms}"
