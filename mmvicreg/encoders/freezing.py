"""Freezing an encoder's leading layer groups (open_clip's "lock"), and the errors of gradient checkpointing.

Each encoder answers ``layer_groups()``: its parameter names (as ``named_parameters()`` gives them, relative to
the encoder) in groups, input to output, every parameter in exactly one group. The functions here do the rest
once for every encoder: which parameters a ``freeze(unfreeze_last)`` freezes (:func:`frozen_names`), which
modules hold all-frozen parameters and so stay in eval mode (:func:`eval_held_modules`: their normalisation
statistics and dropout stay fixed), and which ``state_dict`` keys can then never change
(:func:`frozen_state_keys`). :class:`~mmvicreg.encoders.Encoder` keeps the result and its ``train()`` honours it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

CHECKPOINTING_KINDS = "timm, open_clip, hf encoders"


def encoder_label(encoder: nn.Module) -> str:
    """The encoder's spec name (``resnet18``, ``hf``, ``open_clip:RN50``), or its class name without a spec."""
    try:
        return str(encoder.spec()["name"])  # type: ignore[operator]
    except (NotImplementedError, AttributeError, KeyError, TypeError):
        return type(encoder).__name__


def no_checkpointing_switch(label: str) -> ValueError:
    """The one-line error of an encoder kind without a gradient checkpointing switch."""
    return ValueError(
        f"encoder {label!r} has no gradient checkpointing switch; remove gradient_checkpointing from this branch "
        f"(supported: {CHECKPOINTING_KINDS})"
    )


def checkpointing_refused(label: str, why: str) -> ValueError:
    """The one-line error of a library model that refuses gradient checkpointing (``why``: the library's reason)."""
    why = " ".join(str(why).split()) or "the library refuses it"
    return ValueError(
        f"encoder {label!r} does not support gradient checkpointing ({why}); remove gradient_checkpointing from "
        f"this branch or choose another architecture"
    )


def freezing_unsupported(label: str, why: str) -> ValueError:
    """The one-line error of an encoder whose layers cannot be grouped for freezing."""
    return ValueError(f"encoder {label!r} cannot be frozen ({why}); remove freeze from this branch")


def under(name: str, prefix: str) -> bool:
    """Whether ``name`` is ``prefix`` itself or a name inside it (``""`` is the root: everything is inside it)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def prefix_groups(names: Iterable[str], groups: Sequence[Sequence[str]], rest: int) -> list[list[str]]:
    """Parameter ``names`` split into ``groups`` given as prefixes (module or parameter names, see :func:`under`).

    A name goes to the first group with a matching prefix; names no prefix matches join group ``rest`` (an index
    into ``groups``, negative from the end). Groups left empty are dropped, after ``rest`` is resolved.
    """
    out: list[list[str]] = [[] for _ in groups]
    for name in names:
        index = next((i for i, prefixes in enumerate(groups) if any(under(name, p) for p in prefixes if p)), rest)
        out[index].append(name)
    return [group for group in out if group]


def check_groups(encoder: nn.Module, groups: Sequence[Sequence[str]], label: str) -> None:
    """RuntimeError unless ``groups`` holds every parameter name of ``encoder`` exactly once (a bug, not a config)."""
    names = [name for name, _ in encoder.named_parameters()]
    listed = [name for group in groups for name in group]
    if sorted(listed) != sorted(names):
        missing, extra = set(names) - set(listed), set(listed) - set(names)
        twice = {name for name in listed if listed.count(name) > 1}
        raise RuntimeError(
            f"layer groups of encoder {label!r} do not cover its parameters exactly once: missing "
            f"{sorted(missing)[:5]}, unknown {sorted(extra)[:5]}, repeated {sorted(twice)[:5]}"
        )


def frozen_names(encoder: nn.Module, groups: Sequence[Sequence[str]], unfreeze_last: int, label: str) -> set[str]:
    """The parameter names ``freeze(unfreeze_last)`` freezes: all but the last ``unfreeze_last`` groups.

    Every name of a shared (tied) parameter is included. ValueError when ``unfreeze_last`` is not an int between 0
    and the number of groups (the message names that number).
    """
    n = len(groups)
    if isinstance(unfreeze_last, bool) or not isinstance(unfreeze_last, int) or not 0 <= unfreeze_last <= n:
        raise ValueError(
            f"encoder {label!r} has {n} layer groups; unfreeze_last must be an int between 0 (freeze all) and {n} "
            f"(freeze none), got {unfreeze_last!r}"
        )
    check_groups(encoder, groups, label)
    chosen = {name for group in groups[: n - unfreeze_last] for name in group}
    tensors = {id(p) for name, p in encoder.named_parameters() if name in chosen}
    return {name for name, p in encoder.named_parameters(remove_duplicate=False) if id(p) in tensors}


def eval_held_modules(encoder: nn.Module, frozen: set[str]) -> list[str]:
    """The outermost modules (names relative to ``encoder``; ``""`` is ``encoder`` itself) whose parameters are all
    in ``frozen`` (at least one): they and everything inside them stay in eval mode.

    A module without parameters (dropout, an affine-free norm) is held when a held module contains it.
    """
    counts: dict[str, list[int]] = {}
    for name, _ in encoder.named_parameters(remove_duplicate=False):
        parts = name.split(".")
        for depth in range(len(parts)):
            count = counts.setdefault(".".join(parts[:depth]), [0, 0])
            count[0] += 1
            count[1] += name in frozen
    held: list[str] = []
    for name, _ in encoder.named_modules():
        if any(under(name, h) for h in held):
            continue
        count = counts.get(name)
        if count is not None and count[0] == count[1]:
            held.append(name)
    return held


def frozen_state_keys(encoder: nn.Module, frozen: set[str], held: Sequence[str]) -> set[str]:
    """``state_dict`` keys of ``encoder`` that never change after freezing: the ``frozen`` parameters and every
    buffer of the ``held`` modules (BatchNorm running statistics, ...)."""
    keys = set(encoder.state_dict().keys())
    buffers = {name for name, _ in encoder.named_buffers(remove_duplicate=False) if any(under(name, h) for h in held)}
    return (set(frozen) | buffers) & keys
