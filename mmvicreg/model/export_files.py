"""The names of an export folder's files, which saving (:mod:`.io`), the model card (:mod:`.card`) and the Hub
(:mod:`.hub`) all use: ``config.json`` (the architecture, ``format_version`` ``FORMAT_VERSION``),
``model.safetensors`` (the weights), ``tokenizers/<branch>/`` and ``README.md`` (the model card)."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizers"
CARD_FILE = "README.md"
FORMAT_VERSION = 1

__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT_VERSION", "TOKENIZER_DIR", "WEIGHTS_FILE"]
