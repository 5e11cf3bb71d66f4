"""The rules that look at more than one value of a run configuration, each in one place.

:func:`check_config` runs when a config loads, after every section has been made (each section checks its own
rules: :mod:`mmvicreg.config.schema`); :func:`check_branches` holds the branches' rules and also runs when branches
are given to a builder as plain mappings (:func:`mmvicreg.config.parse_branches`). Each raises
:class:`ConfigError` in one line naming the dotted key at fault, what it holds and what would be accepted.
"""

from __future__ import annotations

from typing import Callable, Mapping

from mmvicreg.choices import DATA_FORMATS, EXPANDER_NORMS, IMAGE_FORMATS, RENAMED_DATA_KEYS, did_you_mean
from mmvicreg.config.keys import data_format_keys
from mmvicreg.config.schema import BRANCH_LOSS_KEYS, BRANCH_TRAINING_KEYS, BranchConfig, RunConfig
from mmvicreg.config.specs import TRANSFORM_DEFAULTS, ConfigError, choice, view_number

FormatKeys = Callable[[str], "set[str] | None"]


def _nearest(key: str, valid: list[str], prefix: str = "") -> str:
    return did_you_mean(key, valid, prefix=prefix) or f"; valid keys: {', '.join(valid)}"


def check_config(config: RunConfig, format_keys: FormatKeys | None = data_format_keys) -> None:
    """The rules across sections; the first problem raises ``ConfigError`` naming its key.

    ``format_keys(format)`` gives the option names a data format accepts (None for an unknown format; default:
    :func:`mmvicreg.config.keys.data_format_keys`); None: the data sections' options are not checked.
    """
    if not config.branches:
        raise ConfigError("the config names no branches; add `branches:` with at least two (e.g. image, caption)")
    check_branches(config.branches)
    names = list(config.branches)
    if config.loss.name == "vicreg" and len(names) < 2 and not config.loss.pairs:
        raise ConfigError(f"VICReg compares branches in pairs; the config has only {names}")
    for pair in config.loss.pairs or []:
        for b in pair:
            if b not in names:
                raise ConfigError(f"loss.pairs names branch {b!r}, which is not a branch{_nearest(b, names)}")
    for b in config.eval.branches or []:
        if b not in names:
            raise ConfigError(f"eval.branches names {b!r}, which is not a branch{_nearest(b, names)}")
    for section in ("train", "eval"):
        data = getattr(config.data, section)
        if data is not None and format_keys is not None:
            check_data_section(data, f"data.{section}", format_keys)
        if data is not None and "classes" in data:
            _check_classes(data, f"data.{section}")
    if config.eval.reference is not None and "classes" in config.eval.reference:
        _check_classes(config.eval.reference, "eval.reference")
    if config.loss.name == "supervised":
        check_supervised(config)
    if config.data.decode_on == "device":
        check_decode_on(config.branches)


LABELLED = ("use labelled images: data.train.format: folder (class subfolders), digits, or hf with "
            "caption_column: null and label_column: NAME")


def check_supervised(config: RunConfig) -> None:
    """``loss.name: supervised``: one branch reading images, and ``data.train`` a labelled map-style image format."""
    names = list(config.branches)
    if len(names) != 1 or (config.branches[names[0]].field or "image") != "image":
        raise ConfigError(f"loss.name: supervised trains one image branch (a linear classifier head on its "
                          f"representation); the config has branches {names}: keep the one image branch")
    branch = config.branches[names[0]]
    if branch.expander is None or branch.expander.widths:
        raise ConfigError(f"loss.name: supervised puts its head on the encoder's output, so an expander would get no "
                          f"gradient (and, under DDP, stall it): set branches.{names[0]}.expander: none")
    data = config.data.train
    fmt = data["format"]
    if fmt not in IMAGE_FORMATS:
        raise ConfigError(f"loss.name: supervised trains on class labels, but data.train.format: {fmt} gives "
                          f"images with captions and no labels; {LABELLED}")
    if fmt == "digits" and data.get("labels") is False:
        raise ConfigError("loss.name: supervised trains on class labels, but data.train.labels: false withholds "
                          "them; remove data.train.labels")
    if fmt == "hf" and (data.get("caption_column", "caption") is not None or not data.get("label_column")):
        raise ConfigError(f"loss.name: supervised trains on class labels, but data.train (hf) reads captions or no "
                          f"label column; {LABELLED}")
    if data.get("streaming"):
        raise ConfigError("loss.name: supervised reads labels through the map-style loader; data.train.streaming: "
                          "true is not supported with it: remove data.train.streaming")


def check_decode_on(branches: Mapping[str, BranchConfig]) -> None:
    """``data.decode_on: device``: every image branch whose training transform is a VICReg view runs its colour
    half on the device (the workers decode nothing, so they cannot run it). Branches whose encoder's modality is
    unknown here (checks disabled) are left to the loader's builder, which refuses the same."""
    for name, b in branches.items():
        owner = b
        while owner.encoder is None and owner.shares in branches:
            owner = branches[owner.shares]
        if owner.encoder is None or owner.encoder.traits.get("modality") != "image":
            continue
        given = b.transform.given() if b.transform is not None else {}
        train = given.get("train", TRANSFORM_DEFAULTS["train"])
        if view_number(train) is not None and given.get("augment_on", "workers") == "workers":
            raise ConfigError(
                f"data.decode_on: device decodes images after the workers, but branches.{name}.transform.augment_on "
                f"is workers (the colour half of {train}); set branches.{name}.transform.augment_on: device, or "
                f"data.decode_on: workers"
            )


def _check_classes(data: dict, key: str) -> None:
    """``classes``: a non-empty list of distinct class names (numbers are names: YAML's 0 is the class "0")."""
    classes = data["classes"]
    if classes is None:
        return
    if not isinstance(classes, (list, tuple)) or not classes or any(
            isinstance(c, bool) or not isinstance(c, (str, int)) for c in classes):
        raise ConfigError(f"{key}.classes is {classes!r}; give a non-empty list of class names, e.g. [0, 1, 2] "
                          f"(digits) or [cat, dog] (folder subfolders)")
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}.classes names a class twice: {names}")
    data["classes"] = names


def check_data_section(data: Mapping[str, object], key: str, format_keys: FormatKeys) -> None:
    """A ``data.*`` section: a known ``format`` and only the options that format takes (renamed keys named)."""
    valid = format_keys(str(data["format"]))
    if valid is None:
        raise ConfigError(f"{key}.format is {data['format']!r}{did_you_mean(data['format'], DATA_FORMATS)}; "
                          f"known formats: {', '.join(DATA_FORMATS)}")
    for name in data:
        if name != "format" and name not in valid:
            renamed = RENAMED_DATA_KEYS.get(name)
            hint = (f"; it is called {renamed!r} (every caption source names its caption file `captions` and its "
                    f"image folder `images`)" if renamed in valid
                    else _nearest(name, sorted(valid | {"format"}), f"{key}."))
            raise ConfigError(f"unknown config key '{key}.{name}' for format {data['format']!r}{hint}")


def check_branches(branches: Mapping[str, BranchConfig]) -> None:
    """Every branch's own rules, then how they share: a ``shares:`` names a branch, no sharing cycle, and one
    training setting per shared encoder."""
    names = list(branches)
    for name, b in branches.items():
        _check_branch(name, b, names)
    for name in names:
        seen, at = [name], branches[name].shares
        while at is not None and at not in seen:
            seen.append(at)
            at = branches[at].shares
        if at is not None:
            raise ConfigError(f"branches {sorted(seen)} share each other in a cycle; one must own an encoder")
    _check_branch_training(branches)


def _check_branch(name: str, b: BranchConfig, names: list[str]) -> None:
    key = f"branches.{name}"
    for loss_key in BRANCH_LOSS_KEYS:
        value = getattr(b, loss_key)
        if value is not None and not value >= 0:
            raise ConfigError(f"{key}.{loss_key} must be >= 0, got {value!r}")
    if b.expander_norm is not None:
        b.expander_norm = choice(b.expander_norm, EXPANDER_NORMS, f"{key}.expander_norm")
    if b.shares is not None and b.shares not in names:
        raise ConfigError(f"branch {name!r} shares {b.shares!r}, which is not a branch"
                          f"{did_you_mean(b.shares, names)}; branches: {', '.join(names)}")
    if b.shares is None and b.encoder is None:
        raise ConfigError(f"branch {name!r} needs an `encoder` (e.g. resnet50, gru) or `shares: <branch>`")
    if b.unfreeze_last is not None and (b.unfreeze_last < 0 or not b.freeze):
        raise ConfigError(
            f"{key}.unfreeze_last is {b.unfreeze_last}; it counts the encoder's last layer groups that still train "
            f"under `freeze: true`: set freeze: true and a number >= 0"
        )
    traits = b.encoder.traits if b.encoder is not None else {}
    if b.gradient_checkpointing and b.shares is None and traits.get("supports_gradient_checkpointing") is False:
        raise ConfigError(
            f"{key}.gradient_checkpointing: encoder {b.encoder.name!r} has no gradient checkpointing switch; "  # type: ignore[union-attr]
            f"remove the key (supported: timm, open_clip and hf encoders)"
        )


def _check_branch_training(branches: Mapping[str, BranchConfig]) -> None:
    """``freeze`` / ``unfreeze_last`` / ``gradient_checkpointing``: one setting per shared encoder."""
    for name, b in branches.items():
        owner = branches.get(b.shares) if b.shares else None
        if owner is None:
            continue
        for key in BRANCH_TRAINING_KEYS:
            mine, theirs = getattr(b, key), getattr(owner, key)
            if mine is not None and mine != theirs:
                raise ConfigError(
                    f"branches.{name}.{key} is {mine!r} but branch {b.shares!r}, whose encoder it shares, has "
                    f"{theirs!r}: one encoder trains one way; set {key} on {b.shares!r} only"
                )
