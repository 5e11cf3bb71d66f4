"""``docs/CONFIG.md``, generated: every config key with its type, default, allowed values and meaning, then each
data format's options.

    python -m mmvicreg.cli.config_reference > docs/CONFIG.md

The keys come from the typed schema (:func:`mmvicreg.config.reference.schema_keys`), the data formats' options
from the data builders' signatures (:func:`mmvicreg.data.build.format_signature`) with their meanings from
:data:`mmvicreg.config.keys.DATA_KEY_HELP`. ``tests/config/test_reference.py`` fails when the file is out of date.
"""

from __future__ import annotations

import json
from typing import Any

HEADER = """# Config reference

Generated from the typed schema by `python -m mmvicreg.cli.config_reference > docs/CONFIG.md`; do not edit by
hand. A run's config is a YAML file; any key can also be set on the command line as `dotted.key=value`
(`mmvicreg train examples/quickstart.yaml train.max_steps=100`), and `mmvicreg train CONFIG --print-config`
prints the resolved config. `NAME` stands for a branch's name (`image`, `caption`, ...); names (`loss.name`,
`train.mixed_precision`, ...) match in any case.
"""


def _cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return f"`{text}`" if text else "`\"\"`"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def schema_table() -> list[str]:
    """The run config's keys: key, type, default, allowed values, meaning."""
    from mmvicreg.config.reference import schema_keys

    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for k in schema_keys():
        default = f"the weights', else {_cell(k.default)}" if k.weights_first else _cell(k.default)
        lines.append(_row([f"`{k.key}`", k.type, default, ", ".join(k.choices), k.help]))
    return lines


def format_tables() -> list[str]:
    """Per data format: each option, its default (``required`` when it has none) and meaning."""
    from mmvicreg.config.keys import DATA_FORMAT_KEYS, DATA_KEY_HELP, KEY_CHOICES
    from mmvicreg.data.build import format_signature

    lines: list[str] = []
    for fmt, keys in DATA_FORMAT_KEYS.items():
        defaults = format_signature(fmt)
        lines += ["", f"### `format: {fmt}`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for key in keys:
            default = "the section's" if key == "split" else (
                "**required**" if defaults.get(key, ...) is ... else _cell(defaults[key]))
            allowed = ", ".join(KEY_CHOICES.get(f"data.*.{key}", ()))
            lines.append(_row([f"`{key}`", default, allowed, DATA_KEY_HELP[key]]))
    return lines


def config_reference() -> str:
    """The whole of ``docs/CONFIG.md``."""
    from mmvicreg.choices import DATA_FORMATS

    lines = [HEADER, "## Run config", "", *schema_table(), "", "## Data formats", "",
             f"A `data.train` / `data.eval` / `eval.reference` section names a `format` ({', '.join(DATA_FORMATS)}) "
             "and that format's options. Any string option may hold `{split}`, filled with the split.",
             *format_tables()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
