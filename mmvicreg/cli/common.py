"""Pieces every command shares: the help formatter, retired flags, ``KEY=VALUE`` flags, loading a model onto a
device, the flags and encoding options of every ``eval`` command, the data section of shards read for evaluation,
and writing ``--json``.

One name for one concept across commands: ``--index`` is only ever an index folder (``mmvicreg search``),
``--index-kind`` a FAISS index kind, ``--image-branch`` / ``--text-branch`` choose branches, ``--shards`` (and
``--train-shards`` / ``--test-shards``) are webdataset shards. Old spellings are registered with
:func:`add_retired_flag`, so they stop with one line naming the new one instead of changing meaning.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

from mmvicreg.choices import DECODE_PLACES, EVAL_PRECISIONS


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's help (``formatter_class=`` of every parser): descriptions kept as written. The defaults
    are written into the help strings by :class:`CommandParser`. Help strings are %-formatted: write a literal %
    as %%."""


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action``'s help should end with its default: a flag with a value worth showing (not None, a
    switch, an empty list or suppressed) whose help does not already say it (the word "default")."""
    default = action.default
    return bool(action.option_strings) and not (
        "default" in (action.help or "") or default is None or isinstance(default, bool) or default == []
        or default is argparse.SUPPRESS or action.help is argparse.SUPPRESS)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``mmvicreg`` and (argparse makes subparsers of the parent's class) of every subcommand: each
    flag's help ends with ``(default: 256)`` when :func:`shows_default`. Written through the public
    ``add_argument`` rather than a formatter's methods, which argparse keeps private."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if shows_default(action):
            action.help = f"{action.help or ''} (default: %(default)s)".lstrip()
        return action


class RetiredFlag(argparse.Action):
    """A flag a command no longer takes: hidden from help; using it stops the parse with one line (its message)."""

    def __init__(self, option_strings: Sequence[str], dest: str, message: str = "", **_: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs="*", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.message = message

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.exit(2, f"{parser.prog}: error: {self.message}\n")


def add_retired_flag(p: argparse.ArgumentParser, flag: str, message: str) -> None:
    """Register ``flag`` (an old spelling) on ``p``, hidden: given with any values, the command exits 2 with the
    one line ``<prog>: error: <message>``; ``message`` names the flag that replaces it."""
    p.add_argument(flag, action=RetiredFlag, message=message)


def branches_of(model: Any, modality: str) -> list[str]:
    """The names of ``model``'s ``modality`` branches (``image``, ``text``), in the model's order."""
    return [n for n in model.branch_names if model.branch(n).modality == modality]


def check_branch_flag(model: Any, flag: str, name: str, modality: str, allowed: str) -> None:
    """One ValueError line when ``name`` (the value of ``flag``) is not one of ``model``'s ``modality`` branches:
    ``<flag> 'x' is a text branch; <allowed>: [...]`` (``allowed`` says which branches the command takes)."""
    of_kind = branches_of(model, modality)
    if name not in of_kind:
        kind = f"a {model.branch(name).modality} branch" if name in model.branch_names else "not a branch"
        raise ValueError(f"{flag} {name!r} is {kind}; {allowed}: {of_kind}")


def key_values(pairs: Sequence[str], flag: str, example: str = "") -> dict[str, Any]:
    """``["key=value", ...]`` (the values of a repeatable ``flag``) -> ``{key: YAML value}``; one line per mistake."""
    import yaml

    out = {}
    for text in pairs:
        if "=" not in text:
            raise ValueError(f"{flag} {text!r} must look like key=value{f', e.g. {example}' if example else ''}")
        key, value = text.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def load_model(name: str | os.PathLike, device: str | None, pretrained: str | None = None) -> Any:
    """The model ``name`` on ``device`` (default: CUDA when torch sees a GPU): an mmvicreg export (a folder or Hub
    id) or a foreign model, ``open_clip:NAME`` with ``pretrained`` weights (:mod:`mmvicreg.model.adapters`)."""
    from mmvicreg.devices import resolve_device
    from mmvicreg.model.adapters import load_any

    where = resolve_device(device)  # before loading: a missing GPU is named at once
    return load_any(name, pretrained).to(where)


def image_text_branches(model: Any, image: str | None, text: str | None, purpose: str) -> tuple[str, str]:
    """``(image branch, text branch)`` from ``--image-branch`` / ``--text-branch`` (one not given: the model's first
    of its modality); one ValueError line for a model without one of them, or a wrong name or modality."""
    chosen = []
    for flag, name, modality in (("--image-branch", image, "image"), ("--text-branch", text, "text")):
        of_kind = branches_of(model, modality)
        if name is None and not of_kind:
            raise ValueError(f"{purpose} needs an image branch and a text branch; this model has "
                             f"{list(model.branch_names)}, no {modality} branch")
        name = of_kind[0] if name is None else name
        check_branch_flag(model, flag, name, modality, f"the model's {modality} branches")
        chosen.append(name)
    return chosen[0], chosen[1]


def add_common_arguments(p: argparse.ArgumentParser, formats: Sequence[str], format_help: str,
                         batch_help: str = "items per encoding batch") -> None:
    """The flags of every ``eval`` command: the model, the data ``--format`` (one of ``formats``, described by
    ``format_help``), encoding (``--batch-size``: ``batch_help``), ``--option``, ``--json``, ``--no-progress``."""
    p.add_argument("--model", required=True, help="directory written by save_pretrained (a run's model/), Hub id, "
                                                  "open_clip:NAME (weights: --pretrained) or hf_clip:FOLDER_OR_ID")
    p.add_argument("--pretrained", help="open_clip:NAME only: an open_clip tag (needs the network) or a local "
                                        "checkpoint file; default: random init")
    p.add_argument("--format", required=True, choices=formats, help=format_help)
    add_encoding_arguments(p, batch_help)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other data key of the format, as in a config's data section, e.g. --option pairs=all "
                        "(repeatable)")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="do not show progress bars")


def shard_section(fmt: str, shards: str | None, flag: str, others: dict[str, Any],
                  options: dict[str, Any]) -> dict[str, Any] | None:
    """The data section of shards read for evaluation, or None when ``fmt`` is not ``webdataset``.

    ``shards`` (the value of ``flag``: a folder written by ``mmvicreg shards``, a ``.txt`` list or a brace
    pattern of local tars) is indexed by its tar headers, not streamed (``streaming: false``). ``others`` are
    the data flags of the other formats (``{"--images": value, ...}``); ``options`` are ``--option``'s. One
    ValueError line when a flag belongs to the other kind of format, ``flag`` is missing or ``streaming`` is set.
    """
    if fmt != "webdataset":
        if shards:
            raise ValueError(f"{flag} is read by --format webdataset only; --format {fmt} reads "
                             f"{' / '.join(others)}")
        return None
    given = [name for name, value in others.items() if value]
    if given:
        raise ValueError(f"--format webdataset reads {flag} only; drop {' and '.join(given)}")
    if not shards:
        raise ValueError(f"--format webdataset needs {flag} (a folder written by mmvicreg shards, its shards.txt or a "
                         f"brace pattern of local .tar files)")
    if "streaming" in options:
        raise ValueError("evaluation reads shards through an index of their tar headers; drop --option streaming")
    return {"format": "webdataset", **options, "shards": shards, "streaming": False}


def add_encoding_arguments(p: argparse.ArgumentParser, batch_help: str = "items per encoding batch") -> None:
    """How an eval command encodes, what :func:`encoding` reads: ``--batch-size`` (``batch_help``), ``--device``,
    ``--precision``, ``--workers``, ``--decode-on`` (the config's ``eval.decode_on``)."""
    p.add_argument("--batch-size", type=int, default=256, help=batch_help)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--precision", choices=EVAL_PRECISIONS, default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader processes that decode and preprocess (default: up to 4; 0: in this process)")
    p.add_argument("--decode-on", choices=DECODE_PLACES, default="workers",
                   help="where JPEGs decode: workers (the DataLoader's processes) or device (one batched "
                        "torchvision decode on the model's device: nvJPEG on CUDA); not eval linear's protocol")


def encoding(args: argparse.Namespace) -> dict[str, Any]:
    """The encoding options of every eval command: ``batch_size``, ``workers``, ``precision``, ``decode_on``,
    ``progress``."""
    return {"batch_size": args.batch_size, "workers": args.workers, "precision": args.precision,
            "decode_on": args.decode_on, "progress": args.progress}


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (``--json``); nothing when ``path`` is None."""
    if path:
        from mmvicreg.files import atomic_write_json

        atomic_write_json(path, payload)
