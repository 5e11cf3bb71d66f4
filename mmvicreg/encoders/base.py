"""What every encoder is: an nn.Module mapping a batch of preprocessed inputs to (n, output_dim) vectors."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from mmvicreg.encoders import freezing


class Encoder(nn.Module):
    """Base class of all encoders.

    Contract: ``forward(x) -> (n, output_dim)`` float tensor (the representation ``h``), where ``x`` is
    ``(n, 3, H, W)`` float images for ``modality == "image"`` and ``(n, L)`` int64 token ids right-padded with
    ``tokenizer.pad_id`` for ``modality == "text"``. ``spec()`` returns the JSON-able dict that rebuilds the
    same architecture through :func:`mmvicreg.encoders.build_encoder` (weights are saved separately).

    Each class answers for itself what the model needs to know about it: ``modality`` (``"image"`` or
    ``"text"``) and ``owns_tokenizer`` (True when the encoder carries a ``tokenizer`` that must be saved with
    it and handed back to :func:`~mmvicreg.encoders.build_encoder` to rebuild it). Ask
    :func:`mmvicreg.encoders.encoder_class` or :func:`mmvicreg.encoders.needs_tokenizer` for a spec, rather than
    comparing encoder names.

    Options: what a spec may give besides its ``name`` is :meth:`options` (the constructor's keyword arguments
    and :attr:`tokenizer_options`), so a config names an unknown option when it loads, before anything is built;
    :attr:`renamed_options` says what an old option is called now.

    Training switches, the same on every encoder: ``supports_gradient_checkpointing`` (a class attribute: whether
    :meth:`set_gradient_checkpointing` can turn it on, asked before any model is built) and
    :meth:`set_gradient_checkpointing`; :meth:`freeze` (all but the last ``unfreeze_last`` of
    :meth:`layer_groups`), :attr:`is_frozen` and :meth:`frozen_state_keys`. A frozen part stays in eval mode
    through :meth:`train` (fixed normalisation statistics, no dropout).
    """

    modality: ClassVar[str] = "image"
    owns_tokenizer: ClassVar[bool] = False
    tokenizer: Any = None  # the text tokenizer of an encoder that owns one (``encode``, ``pad_id``, ``save``)
    output_dim: int
    supports_gradient_checkpointing: ClassVar[bool] = False
    tokenizer_options: ClassVar[tuple[str, ...]] = ()  # options of the tokenizer the builder makes for it
    renamed_options: ClassVar[dict[str, str]] = {}  # an old option name -> one line saying what it is now

    @classmethod
    def options(cls, name: str) -> frozenset[str] | None:
        """The options a spec of this class (called ``name``) may give besides ``name``: the constructor's keyword
        arguments, except the model name and the tokenizer (the builder gives those), and
        :attr:`tokenizer_options`. None when the constructor passes any keyword on to a library (which checks it)."""
        params = inspect.signature(cls.__init__).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        own = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return frozenset((own - {"self", "name", "model", "tokenizer"}) | set(cls.tokenizer_options))

    @classmethod
    def learns_vocabulary(cls, spec: Any) -> bool:
        """Whether building ``spec`` needs the training captions (a vocabulary learned from them)."""
        return False

    @classmethod
    def architecture_only(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` (a dict) without the options that would load weights, open a file or reach the network, so
        that building it gives a random init of the same architecture, for weights that come from elsewhere (an
        export's safetensors). Here ``pretrained``; subclasses drop their library's own such options.
        ``ValueError`` (one line) for a spec that names no architecture without them."""
        return {k: v for k, v in spec.items() if k != "pretrained"}

    _frozen: frozenset[str] = frozenset()  # parameter names frozen by freeze() (every name of a tied parameter)
    _eval_held: tuple[str, ...] = ()  # outermost modules kept in eval mode by train() (""= the whole encoder)
    _requires_grad_before: dict[str, bool] | None = None  # requires_grad of each parameter before the first freeze

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """What this encoder's weights expect of their inputs; ``{}`` when they say nothing (random init).

        Image encoders may give ``size`` (int), ``mean`` and ``std`` (3 floats), ``interpolation``
        (``"bicubic"``, ``"bilinear"``, ...) and ``crop_pct`` (eval centre-crop fraction). A branch fills the
        keys its config leaves out from these (the config wins) and saves the resolved values, so a loaded
        model preprocesses exactly as it trained. Text encoders carry their preprocessing in ``tokenizer``.
        """
        return {}

    def check_input(self, x: Any, branch: str) -> None:
        """Raise one clear error when ``x`` is not what this encoder's modality reads."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"branch {branch!r} expects a tensor batch, got {type(x).__name__}")
        if self.modality == "image":
            if x.ndim != 4 or x.shape[1] != 3 or not (x.is_floating_point() or x.dtype == torch.uint8):
                raise ValueError(
                    f"branch {branch!r} has an image encoder and needs images (batch, 3, H, W), uint8 as the "
                    f"loader makes them or float normalised, got "
                    f"{x.dtype} tensor of shape {tuple(x.shape)}; is a text field routed to an image branch?"
                )
        elif x.ndim != 2 or x.is_floating_point():
            raise ValueError(
                f"branch {branch!r} has a text encoder and needs int64 token ids (batch, length), got "
                f"{x.dtype} tensor of shape {tuple(x.shape)}; are images routed to a text branch?"
            )

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient (activation) checkpointing on or off through the library's own switch.

        Checkpointing recomputes activations in the backward pass instead of keeping them: same gradients, less
        memory, more compute. This base class has no switch: ``enable=True`` raises one ``ValueError`` naming the
        encoder and the fix; ``enable=False`` is a no-op (it is off). Subclasses that have one set
        ``supports_gradient_checkpointing = True`` and override this; a library model that refuses raises the
        same kind of one-line ``ValueError``.
        """
        if enable:
            raise freezing.no_checkpointing_switch(freezing.encoder_label(self))

    def layer_groups(self) -> list[list[str]]:
        """Parameter names (relative to this encoder) in layer groups, input to output; each parameter in exactly
        one group. :meth:`freeze` freezes all but the last groups. ``ValueError`` for an encoder without them."""
        raise freezing.freezing_unsupported(freezing.encoder_label(self), "it defines no layer groups")

    def freeze(self, unfreeze_last: int = 0) -> None:
        """Freeze all but the last ``unfreeze_last`` :meth:`layer_groups` (open_clip's "lock").

        Frozen parameters get ``requires_grad=False``; the others get back the ``requires_grad`` they had before
        the first ``freeze`` (so a later call with another ``unfreeze_last`` re-decides, and ``unfreeze_last`` equal
        to the number of groups unfreezes everything). Modules whose parameters are all frozen stay in eval mode
        from now on, also under ``.train()``: their BatchNorm running statistics never change and their dropout is
        off. With ``unfreeze_last=0`` the whole encoder is a fixed feature extractor, always in eval mode.
        ``ValueError`` (naming the number of groups) unless ``0 <= unfreeze_last <= len(layer_groups())``.
        """
        label = freezing.encoder_label(self)
        frozen = freezing.frozen_names(self, self.layer_groups(), unfreeze_last, label)
        if self._requires_grad_before is None:
            self._requires_grad_before = {name: p.requires_grad for name, p in self.named_parameters()}
        for name, p in self.named_parameters():
            p.requires_grad_(name not in frozen and self._requires_grad_before.get(name, True))
        self._frozen = frozenset(frozen)
        self._eval_held = tuple(freezing.eval_held_modules(self, frozen))
        self.train(self.training)  # hold the frozen modules in eval mode now (or release them)

    @property
    def is_frozen(self) -> bool:
        """True when :meth:`freeze` froze at least one parameter."""
        return bool(self._frozen)

    def frozen_state_keys(self) -> set[str]:
        """The ``state_dict()`` keys (relative to this encoder) whose tensors cannot change in training after
        :meth:`freeze`: the frozen parameters and every buffer of the modules held in eval mode. Empty when not
        frozen."""
        return freezing.frozen_state_keys(self, set(self._frozen), self._eval_held) if self._frozen else set()

    def train(self, mode: bool = True) -> Encoder:
        """``nn.Module.train``, except that the frozen modules (see :meth:`freeze`) stay in eval mode."""
        super().train(mode)
        if mode:
            for name in self._eval_held:
                self.get_submodule(name).train(False)
        return self
