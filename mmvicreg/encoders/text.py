"""Text encoders: a VSE++-style GRU, a Hugging Face transformer, and the open_clip text transformer.

Each reads ``(n, L)`` int64 token ids right-padded with its tokenizer's ``pad_id`` and owns that tokenizer.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmvicreg.encoders import freezing
from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.text_tokenizers import OpenCLIPTokenizer, TextTokenizer
from mmvicreg.encoders.weights import hf_model, open_clip_model


def _lengths(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (ids != pad_id).sum(dim=1).clamp(min=1)


HF_CODE_KEYS = ("auto_map", "_name_or_path", "trust_remote_code")  # where a transformers config points at code


def inert_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """A transformers config dict, nested ones included, without what could make transformers run or fetch
    code: ``auto_map`` (custom classes), ``_name_or_path`` (where they live), ``trust_remote_code``, and an
    ``attn_implementation``-style key naming anything but a built-in kernel (a Hub kernel ``org/name``)."""

    def inert(key: str, value: Any) -> bool:
        if key in HF_CODE_KEYS:
            return False
        return not key.endswith("_implementation") or (isinstance(value, str) and "/" not in value)

    return {k: inert_hf_config(v) if isinstance(v, dict) else v for k, v in config.items() if inert(k, v)}


def hf_checkpointing(model: nn.Module, enable: bool, label: str) -> None:
    """Gradient checkpointing of a transformers ``PreTrainedModel`` (non-reentrant), or one ``ValueError``.

    transformers checkpoints only in train mode. The input-embedding hook it adds (for re-entrant checkpointing
    of frozen embeddings) is removed: non-reentrant checkpointing needs no input gradients, and without the hook
    a frozen encoder builds no autograd graph.
    """
    if not enable:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise freezing.checkpointing_refused(label, f"transformers' {type(model).__name__} has no checkpointing")
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as e:  # "... is not compatible with gradient checkpointing"
        raise freezing.checkpointing_refused(label, f"transformers: {e}") from None
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()


def hf_layers(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """``(name, list)`` of the transformer layers of a transformers model: the ``nn.ModuleList`` of
    ``config.num_hidden_layers`` modules holding the most parameters (``encoder.layer`` for BERT); None if none."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n and n]
    return max(found, key=lambda item: sum(p.numel() for p in item[1].parameters())) if found else None


def hf_groups(model: nn.Module, prefix: str, label: str) -> list[list[str]]:
    """Layer groups of a transformers model, names prefixed by ``prefix``: [the input embeddings (every parameter
    registered before the layers)], then each transformer layer; the rest (pooler, final norm) joins the last
    layer, so ``unfreeze_last=k`` trains the last ``k`` layers (BERT's pooler alone would train nothing)."""
    layers = hf_layers(model)
    if layers is None:
        raise freezing.freezing_unsupported(label, "no list of config.num_hidden_layers transformer layers found")
    lname, modules = layers
    names = [name for name, _ in model.named_parameters()]
    first = next(i for i, name in enumerate(names) if freezing.under(name, lname))
    groups = [names[:first], *[[f"{lname}.{i}"] for i in range(len(modules))]]
    return [[prefix + name for name in group] for group in freezing.prefix_groups(names, groups, rest=-1)]


class GRUTextEncoder(Encoder):
    """VSE++ text tower: learned word embeddings -> 1-layer GRU -> the hidden state at each caption's last word.

    Defaults follow VSE++ (Faghri et al. 2018): word dim 300, hidden 1024, one layer.
    """

    modality = "text"
    owns_tokenizer = True
    tokenizer_options = ("min_count", "max_length", "vocab_size")  # vocab_size: read and ignored (a word vocabulary)

    @classmethod
    def learns_vocabulary(cls, spec: Any) -> bool:
        return True

    def __init__(self, tokenizer: TextTokenizer, word_dim: int = 300, hidden_dim: int = 1024, num_layers: int = 1):
        super().__init__()
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_id  # an int read once: forward reads no tokenizer (torch.compile traces it)
        self.word_dim, self.hidden_dim, self.num_layers = word_dim, hidden_dim, num_layers
        self.embed = nn.Embedding(tokenizer.vocab_size, word_dim, padding_idx=self.pad_id)
        self.gru = nn.GRU(word_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # VSE++'s init
        self.output_dim = hidden_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(ids, self.pad_id)
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # (layers, n, hidden): the state after each sequence's true last token
        return h_n[-1]

    def spec(self) -> dict[str, Any]:
        return {"name": "gru", "word_dim": self.word_dim, "hidden_dim": self.hidden_dim, "num_layers": self.num_layers}

    def layer_groups(self) -> list[list[str]]:
        """[the word embedding], then each GRU layer (its parameters ``gru.*_l{i}``)."""
        layers: list[list[str]] = [[] for _ in range(self.num_layers)]
        for name, _ in self.gru.named_parameters():
            layers[int(re.search(r"_l(\d+)", name).group(1))].append(f"gru.{name}")  # type: ignore[union-attr]
        return [[name for name, _ in self.embed.named_parameters(prefix="embed")], *layers]


class HFTextEncoder(Encoder):
    """A transformers encoder (BERT-style) from a config dict (random init) or ``pretrained`` weights.

    Exactly one of ``config`` (a dict; random init) or ``pretrained`` (a local model folder, or a Hugging Face
    Hub id such as ``sentence-transformers/all-MiniLM-L6-v2``: network or cache) is given; the weights load
    in float32. ``tokenizer`` is the checkpoint's own (:func:`~mmvicreg.encoders.text_tokenizers.hf_tokenizer`)
    for pretrained weights. ``pooling``: ``"mean"`` over non-pad tokens or ``"cls"`` (the first token).
    """

    modality = "text"
    owns_tokenizer = True
    supports_gradient_checkpointing = True
    tokenizer_options = ("min_count", "max_length", "vocab_size")
    renamed_options = {"path": "hf option `path` is now `pretrained` (a local folder or a Hub id)"}

    @classmethod
    def learns_vocabulary(cls, spec: Any) -> bool:
        return not (isinstance(spec, dict) and spec.get("pretrained"))  # from a config: a word-piece vocabulary

    @classmethod
    def architecture_only(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` with its ``config`` (required) and no ``pretrained``; the config loses what could make
        transformers fetch or run code (:func:`inert_hf_config`)."""
        out = super().architecture_only(spec)
        if not isinstance(out.get("config"), dict):
            raise ValueError(
                "this hf encoder spec has no `config` (the architecture its saved weights load into), only "
                f"{', '.join(map(repr, spec)) or 'nothing'}; re-export the model (an export never loads `pretrained`)"
            )
        out["config"] = inert_hf_config(out["config"])
        return out

    def __init__(
        self,
        tokenizer: TextTokenizer,
        config: dict[str, Any] | None = None,
        pretrained: str | bool | None = None,
        pooling: str = "mean",
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if pretrained is False:
            pretrained = None
        if (config is None) == (pretrained is None):
            raise ValueError(
                "an hf text encoder needs exactly one of `config` (a dict: random init) or `pretrained` (a local "
                "folder or a Hub id)"
            )
        self.tokenizer, self.pooling = tokenizer, pooling
        if pretrained is not None:
            self.model = hf_model(pretrained)
        else:
            cfg = dict(config)  # type: ignore[arg-type]
            model_type = cfg.pop("model_type", "bert")
            cfg.setdefault("vocab_size", tokenizer.vocab_size)
            cfg.setdefault("pad_token_id", tokenizer.pad_id)
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **cfg), trust_remote_code=False)
        if self.model.config.vocab_size < tokenizer.vocab_size:
            raise ValueError(
                f"the hf text encoder's vocab_size ({self.model.config.vocab_size}) is smaller than its "
                f"tokenizer's ({tokenizer.vocab_size}); raise vocab_size in the config"
            )
        self.output_dim = int(self.model.config.hidden_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.tokenizer.pad_id
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def spec(self) -> dict[str, Any]:
        # The full HF config and no `pretrained`: the export rebuilds without the folder, the Hub or a network.
        return {"name": "hf", "config": self.model.config.to_dict(), "pooling": self.pooling}

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """transformers' checkpointing (non-reentrant; active in train mode); ``ValueError`` for models without."""
        hf_checkpointing(self.model, enable, "hf")

    def layer_groups(self) -> list[list[str]]:
        """[embeddings], each transformer layer (the last with the pooler and any final norm): see :func:`hf_groups`."""
        return hf_groups(self.model, "model.", "hf")


class OpenCLIPTextEncoder(Encoder):
    """The text transformer of an open_clip model by name, with open_clip's own tokenizer for that model.

    ``pretrained`` loads the weights exactly as the vision tower does
    (:class:`~mmvicreg.encoders.image.OpenCLIPImageEncoder`): None/False (random init), an open_clip tag
    (network or cache) or a local weights file; both towers given the same value load the same checkpoint.
    """

    modality = "text"
    owns_tokenizer = True
    supports_gradient_checkpointing = True

    def __init__(self, model: str, pretrained: str | bool | None = None, tokenizer: OpenCLIPTokenizer | None = None):
        super().__init__()
        import open_clip

        self.model_name = model
        self.tokenizer = tokenizer or OpenCLIPTokenizer(model)
        clip = open_clip_model(model, pretrained)
        if hasattr(clip, "text"):  # CustomTextCLIP: the text tower is a module of its own
            self.text = clip.text
            self._encode = self.text
        else:  # CLIP keeps the text tower's parts on the model itself: drop the vision tower, keep the rest
            del clip.visual
            self.text = clip
            self._encode = clip.encode_text
        self.output_dim = int(open_clip.get_model_config(model)["embed_dim"])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._encode(ids)

    def spec(self) -> dict[str, Any]:
        return {"name": f"open_clip_text:{self.model_name}"}

    def _hf_tower(self) -> nn.Module | None:
        """The transformers model of an open_clip text tower built on one (``roberta-ViT-B-32``, ...), else None."""
        from transformers import PreTrainedModel

        transformer = getattr(self.text, "transformer", None)
        return transformer if isinstance(transformer, PreTrainedModel) else None

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """The text tower's ``set_grad_checkpointing(enable)``; for a CLIP model (text parts on the model) its text
        transformer's ``grad_checkpointing`` flag, which is all CLIP's own switch sets besides the dropped vision
        tower's; transformers towers through transformers."""
        import open_clip

        label = f"open_clip_text:{self.model_name}"
        if self._hf_tower() is not None:
            hf_checkpointing(self._hf_tower(), enable, label)  # type: ignore[arg-type]
        elif isinstance(self.text, open_clip.CLIP):
            self.text.transformer.grad_checkpointing = enable
        else:
            self.text.set_grad_checkpointing(enable)

    def layer_groups(self) -> list[list[str]]:
        """The groups of open_clip's ``lock_text_tower``: [token, positional and class embeddings], each block (the
        last with ln_final and the rest), [text_projection]; transformers towers: :func:`hf_groups`, then [proj]."""
        label = f"open_clip_text:{self.model_name}"
        names = [name for name, _ in self.named_parameters()]
        hf = self._hf_tower()
        if hf is not None:
            groups = hf_groups(hf, "text.transformer.", label)
            rest = [name for name in names if not freezing.under(name, "text.transformer")]
            return groups + [rest] if rest else groups
        blocks = getattr(getattr(self.text, "transformer", None), "resblocks", None)
        if blocks is None:
            raise freezing.freezing_unsupported(label, f"unknown open_clip text tower {type(self.text).__name__}")
        embed = [f"text.{n}" for n in ("token_embedding", "positional_embedding", "cls_emb")]
        layers = [[f"text.transformer.resblocks.{i}"] for i in range(len(blocks))]
        return freezing.prefix_groups(names, [embed, *layers, ["text.text_projection"]], rest=-2)
