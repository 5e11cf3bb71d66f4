"""Text tokenizers behind one small interface: ``encode(str) -> 1-D int64 ids``, ``pad_id``, ``save``/``load``.

* ``word``: a word-level vocabulary learned from the training captions (lower-cased, split on white space and
  punctuation, words rarer than ``min_count`` map to ``<unk>``), for the VSE++-style GRU;
* ``wordpiece``: a BERT-style WordPiece vocabulary learned from the training captions, for a transformer from
  a config with no pretrained tokenizer;
* ``hf``: the tokenizer of a Hugging Face checkpoint (a local folder, or a Hub id: opt-in network);
* ``open_clip``: the BPE tokenizer that ships inside open_clip (nothing to learn or save).

The first three are Hugging Face fast tokenizers built with the ``tokenizers`` library and saved with
``save_pretrained``: JSON files, no pickle. They load back as data (:func:`saved_hf_tokenizer`): a saved
``auto_map`` pointing at Python code is never followed, and transformers is never asked to trust remote code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mmvicreg.encoders.weights import hf_load

TOKENIZER_KINDS = ("word", "wordpiece", "hf", "open_clip")
# The kinds of file a saved tokenizer is made of (what transformers' save_pretrained writes: tokenizer.json, configs
# and vocab.json; vocab.txt and merges.txt; sentencepiece .model files, protobuf; .jinja chat templates, never
# rendered here), all data: an export carries, and a Hub download fetches, no other (no .py, no pickle).
SAVED_FILE_KINDS = (".json", ".txt", ".model", ".jinja")


class TextTokenizer:
    """A fast HF tokenizer with a fixed truncation length."""

    def __init__(self, hf_tokenizer, kind: str, max_length: int = 64):
        self.tokenizer = hf_tokenizer
        self.kind = kind
        self.max_length = max_length
        if hf_tokenizer.pad_token_id is None:
            raise ValueError(f"the {kind} tokenizer has no pad token; set one (tokenizer.pad_token)")

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"a text branch tokenizes strings, got {type(text).__name__}; is an image routed to it?")
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        if not ids:  # an empty caption still needs one position so the encoder has a state to return
            ids = [self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else self.pad_id]
        return torch.tensor(ids, dtype=torch.long)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        (directory / "mmvicreg_tokenizer.json").write_text(
            json.dumps({"kind": self.kind, "max_length": self.max_length})
        )

    @classmethod
    def load(cls, directory: Path) -> TextTokenizer:
        """The tokenizer :meth:`save` wrote, read as data only (:func:`saved_hf_tokenizer`)."""
        meta = json.loads((directory / "mmvicreg_tokenizer.json").read_text())
        if meta.get("kind") not in TOKENIZER_KINDS:
            raise ValueError(f"unknown tokenizer kind {meta.get('kind')!r}; known: {', '.join(TOKENIZER_KINDS)}")
        return cls(saved_hf_tokenizer(directory), meta["kind"], meta["max_length"])


def saved_hf_tokenizer(directory: Path) -> Any:
    """The transformers tokenizer saved in ``directory``, loaded without running or fetching any code.

    Its class is the one ``tokenizer_config.json`` records when transformers ships it, else the generic fast
    tokenizer over ``tokenizer.json``. ``auto_map`` (a pointer to Python files) is never followed and nothing
    prompts: a saved tokenizer is data. AutoTokenizer is not used, as it would follow ``auto_map``.
    """
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    shipped = tokenizer_class_from_name(name) if isinstance(name, str) and name else None
    if not (isinstance(shipped, type) and issubclass(shipped, PreTrainedTokenizerBase)):
        shipped = PreTrainedTokenizerFast
    return shipped.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)


class OpenCLIPTokenizer:
    """open_clip's tokenizer for a model name; fixed context length (77 for CLIP), padded with 0."""

    kind = "open_clip"
    pad_id = 0

    def __init__(self, model: str):
        import open_clip

        self.model = model
        self.tokenizer = open_clip.get_tokenizer(model)
        self.vocab_size = int(getattr(self.tokenizer, "vocab_size", 49408))

    def encode(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"a text branch tokenizes strings, got {type(text).__name__}; is an image routed to it?")
        return self.tokenizer([text])[0].long()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mmvicreg_tokenizer.json").write_text(json.dumps({"kind": "open_clip", "model": self.model}))

    @classmethod
    def load(cls, directory: Path) -> OpenCLIPTokenizer:
        """The tokenizer of the open_clip model :meth:`save` recorded: one open_clip ships (never a Hub or folder
        reference such as ``hf-hub:org/name``, which open_clip would fetch)."""
        import open_clip

        model = json.loads((directory / "mmvicreg_tokenizer.json").read_text())["model"]
        if model not in open_clip.list_models():
            raise ValueError(f"{model!r} is not an open_clip model (list them with open_clip.list_models())")
        return cls(model)


def _fast(tokenizer_object, **special: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, **special)


def _corpus(captions: Iterable[str] | None, kind: str) -> list[str]:
    corpus = [c for c in (captions or []) if isinstance(c, str)]
    if not corpus:
        raise ValueError(
            f"a {kind!r} tokenizer learns its vocabulary from the training captions, but none were given; "
            f"pass captions (the trainer does this from data.train) or load a saved model directory"
        )
    return corpus


def word_tokenizer(captions: Iterable[str], min_count: int = 1, max_length: int = 64) -> TextTokenizer:
    """Word-level vocabulary from captions: ``<pad>`` = 0, ``<unk>`` = 1, then words seen ≥ ``min_count`` times."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(min_frequency=min_count, special_tokens=["<pad>", "<unk>"])
    tok.train_from_iterator(_corpus(captions, "word"), trainer=trainer)
    return TextTokenizer(_fast(tok, pad_token="<pad>", unk_token="<unk>"), "word", max_length)


def wordpiece_tokenizer(captions: Iterable[str], vocab_size: int = 8000, max_length: int = 64) -> TextTokenizer:
    """BERT-style WordPiece learned from captions, with ``[CLS] ... [SEP]`` around each text."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        _corpus(captions, "wordpiece"), trainer=trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = _fast(tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return TextTokenizer(fast, "wordpiece", max_length)


def hf_tokenizer(pretrained: str, max_length: int | None = None) -> TextTokenizer:
    """The tokenizer of a Hugging Face checkpoint: a local model folder, or a Hub id (opt-in network or cache).

    ``max_length`` defaults to the checkpoint's own limit: the smaller of the tokenizer's ``model_max_length``
    and the model config's ``max_position_embeddings`` (512 when neither says). A ``pretrained`` that is neither
    an existing folder nor a Hub id raises ValueError; a Hub id that cannot be had raises
    :class:`~mmvicreg.encoders.weights.PretrainedUnavailable`.
    """
    from transformers import AutoConfig, AutoTokenizer

    what = "the hf encoder"
    tokenizer = hf_load(AutoTokenizer.from_pretrained, pretrained, what)
    if max_length is None:
        config = hf_load(AutoConfig.from_pretrained, pretrained, what)
        limits = [int(tokenizer.model_max_length), int(getattr(config, "max_position_embeddings", 0) or 0)]
        limits = [n for n in limits if 0 < n < 1_000_000]  # an unset model_max_length is a huge sentinel
        max_length = min(limits) if limits else 512
    return TextTokenizer(tokenizer, "hf", max_length)


def load_tokenizer(directory: Path) -> TextTokenizer | OpenCLIPTokenizer:
    meta = directory / "mmvicreg_tokenizer.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing: the tokenizer of this saved model is incomplete")
    kind = json.loads(meta.read_text())["kind"]
    return OpenCLIPTokenizer.load(directory) if kind == "open_clip" else TextTokenizer.load(directory)
