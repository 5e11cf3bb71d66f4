"""The step's speed switches keep its numbers: channels-last and the fused AdamW step give the default step's loss
and gradients to tolerance on the CPU."""

import copy

import pytest
import torch
from mmvicreg.config import ConfigError, load_config
from torch.nn.utils.rnn import pad_sequence

from mmvicreg.data import build_source
from mmvicreg.preprocessing import normalize_images
from mmvicreg.model import JointEmbedding
from mmvicreg.objective import build_objective
from mmvicreg.train.speed import apply_speed_switches
from tests.helpers import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart.yaml"


def _loss_and_grads(train_overrides, dtype=torch.float32):
    """One step of the quickstart towers (test_resnet + GRU) on 32 shapes scenes: loss and every gradient
    (``dtype``: the model's and the images' floating-point type)."""
    config = load_config(QUICKSTART, ["branches.image.expander=64-64", "branches.caption.expander=64-64",
                                      *[f"train.{k}={v}" for k, v in train_overrides.items()]])
    source = build_source({"format": "shapes", "split": "train", "num_images": 32, "size": 32})
    torch.manual_seed(0)
    model = JointEmbedding.from_config(config.branches, captions=[c for caps in source.captions for c in caps])
    apply_speed_switches(model.to(dtype), config.train, torch.device("cpu"))
    image = model.branch("image").preprocessing
    x = normalize_images(torch.from_numpy(source.images[:32].copy()).permute(0, 3, 1, 2), image.mean, image.std)
    x = x.to(dtype)
    tok = model.branch("caption").tokenizer
    ids = pad_sequence([tok.encode(caps[0]) for caps in source.captions[:32]], batch_first=True,
                       padding_value=tok.pad_id)
    objective = build_objective(config.loss, config.branches)
    loss = objective(model({"image": x, "caption": ids})).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("switch", [{"channels_last": True}, {"tf32": True}])
def test_a_switch_gives_the_eager_loss_and_gradients(switch):
    eager_loss, eager = _loss_and_grads({"channels_last": False})
    loss, grads = _loss_and_grads(switch)
    assert loss == pytest.approx(eager_loss.item(), rel=1e-5)
    assert grads.keys() == eager.keys()
    # normwise over all gradients: a BatchNorm's bias gradient is a sum that cancels, so its float32 rounding is
    # large relative to itself but not to the step (TF32 changes nothing on the CPU)
    flat, ref = (torch.cat([g[n].flatten() for n in sorted(eager)]) for g in (grads, eager))
    assert ((flat - ref).norm() / ref.norm()).item() < 1e-5


def test_channels_last_is_applied_to_convolutional_towers_only():
    config = load_config(QUICKSTART, ["train.channels_last=true"])
    model = JointEmbedding.from_config(config.branches, captions=["a red circle"])
    applied = apply_speed_switches(model, config.train, torch.device("cpu"))
    assert applied == ["channels-last image"]
    conv = next(m for m in model.branch("image").encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_fused_adamw_step_equals_the_unfused_one():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    twin = copy.deepcopy(net)
    steps = [torch.optim.AdamW(m.parameters(), lr=1e-2, **kw) for m, kw in ((net, {}), (twin, {"fused": True}))]
    x = torch.randn(32, 8)
    for _ in range(3):
        for m, opt in zip((net, twin), steps):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fused_lars_is_refused():
    with pytest.raises(ConfigError, match="LARS has no fused step"):
        load_config(QUICKSTART, ["train.optimizer.name=lars", "train.optimizer.fused=true"])
