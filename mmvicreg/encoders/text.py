"""Text encoders: a VSE++-style GRU, a Hugging Face transformer, and the open_clip text transformer.

Each reads ``(n, L)`` int64 token ids right-padded with its tokenizer's ``pad_id`` and owns that tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.text_tokenizers import OpenCLIPTokenizer, TextTokenizer
from mmvicreg.encoders.weights import hf_model, open_clip_model


def _lengths(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (ids != pad_id).sum(dim=1).clamp(min=1)


class GRUTextEncoder(Encoder):
    """VSE++ text tower: learned word embeddings -> 1-layer GRU -> the hidden state at each caption's last word.

    Defaults follow VSE++ (Faghri et al. 2018): word dim 300, hidden 1024, one layer.
    """

    modality = "text"
    owns_tokenizer = True

    def __init__(self, tokenizer: TextTokenizer, word_dim: int = 300, hidden_dim: int = 1024, num_layers: int = 1):
        super().__init__()
        self.tokenizer = tokenizer
        self.word_dim, self.hidden_dim, self.num_layers = word_dim, hidden_dim, num_layers
        self.embed = nn.Embedding(tokenizer.vocab_size, word_dim, padding_idx=tokenizer.pad_id)
        self.gru = nn.GRU(word_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # VSE++'s init
        self.output_dim = hidden_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(ids, self.tokenizer.pad_id)
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # (layers, n, hidden): the state after each sequence's true last token
        return h_n[-1]

    def spec(self) -> dict[str, Any]:
        return {"name": "gru", "word_dim": self.word_dim, "hidden_dim": self.hidden_dim, "num_layers": self.num_layers}


class HFTextEncoder(Encoder):
    """A transformers encoder (BERT-style) from a config dict (random init) or ``pretrained`` weights.

    Exactly one of ``config`` (a dict; random init) or ``pretrained`` (a local model folder, or a Hugging Face
    Hub id such as ``sentence-transformers/all-MiniLM-L6-v2``: network or cache) is given; the weights load
    in float32. ``tokenizer`` is the checkpoint's own (:func:`~mmvicreg.encoders.text_tokenizers.hf_tokenizer`)
    for pretrained weights. ``pooling``: ``"mean"`` over non-pad tokens or ``"cls"`` (the first token).
    """

    modality = "text"
    owns_tokenizer = True

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
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))
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


class OpenCLIPTextEncoder(Encoder):
    """The text transformer of an open_clip model by name, with open_clip's own tokenizer for that model.

    ``pretrained`` loads the weights exactly as the vision tower does
    (:class:`~mmvicreg.encoders.image.OpenCLIPImageEncoder`): None/False (random init), an open_clip tag
    (network or cache) or a local weights file; both towers given the same value load the same checkpoint.
    """

    modality = "text"
    owns_tokenizer = True

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
