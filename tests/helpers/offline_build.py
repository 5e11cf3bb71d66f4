"""Build every encoder kind, run forward and backward: run with HF_HUB_OFFLINE=1 and empty caches (see test)."""

import tempfile
from pathlib import Path

import torch

from mmvicreg.encoders import build_encoder
from tests.helpers.models import CAPTIONS, TINY_BERT


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoConfig, AutoModel

        from mmvicreg.encoders.text_tokenizers import wordpiece_tokenizer

        local = Path(tmp) / "local-bert"
        tok = wordpiece_tokenizer(CAPTIONS, vocab_size=200)
        tok.tokenizer.save_pretrained(local)
        AutoModel.from_config(AutoConfig.for_model(vocab_size=tok.vocab_size, **TINY_BERT)).save_pretrained(local)
        specs = [
            ({"name": "resnet18"}, 32),
            ({"name": "vit_tiny_patch16_224", "image_size": 32}, 32),
            ({"name": "open_clip:RN50", "image_size": 64}, 64),
            ({"name": "open_clip:ViT-B-32", "image_size": 64}, 64),
            ({"name": "gru", "word_dim": 16, "hidden_dim": 32}, None),
            ({"name": "hf", "config": TINY_BERT, "vocab_size": 200}, None),
            ({"name": "hf", "pretrained": str(local), "pooling": "cls"}, None),
            ({"name": "open_clip_text:ViT-B-32"}, None),
        ]
        for spec, size in specs:
            enc = build_encoder(spec, captions=CAPTIONS)
            if size:
                x = torch.randn(2, 3, size, size)
            else:
                x = torch.nn.utils.rnn.pad_sequence(
                    [enc.tokenizer.encode(c) for c in CAPTIONS[:3]], batch_first=True, padding_value=enc.tokenizer.pad_id
                )
            out = enc(x)
            assert out.shape == (x.shape[0], enc.output_dim), (spec, out.shape)
            out.pow(2).mean().backward()
            grads = [p.grad for p in enc.parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), spec
            print("ok", spec["name"], enc.output_dim, flush=True)


if __name__ == "__main__":
    main()
