"""``data.decode_on: device``: the workers draw the CPU path's crops and flips and hand on the JPEG's bytes; the
device decodes them in one batched ``decode_jpeg``. On this CPU-only machine the device is the CPU (libjpeg-turbo,
the workers' decoder): where the workers decode at full size the pixels are equal, elsewhere within the bounds below.
"""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mmvicreg.config import ConfigError, load_config
from mmvicreg.data import BadImageError, DeviceInput, branch_preprocessors, csv_captions, make_loader
from mmvicreg.data.build import format_options
from mmvicreg.data.device_decode import DeviceDecode, EncodedCrops, cropper_for, decode_crops
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.transforms import build_transform, vicreg_crop
from mmvicreg.preprocessing import ImagePreprocessing
from tests.helpers.configs import tiny_config

SEEDS = range(40)


def _picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colours (a JPEG of it keeps its detail; no two columns alike, so a flip shows)."""
    noise = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


def _encoded(array: np.ndarray, fmt: str = "JPEG", mode: str = "RGB", name: str = "a.jpg") -> EncodedImage:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return EncodedImage(buf.getvalue(), name)


def _on_device(item, size: int, crop_pct: float = 0.875) -> torch.Tensor:
    return decode_crops({"i": EncodedCrops([item])}, {"i": DeviceDecode(size, "bicubic", crop_pct)}, "cpu")["i"][0]


def _both(image: EncodedImage, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    """The CPU path's view crop and the device path's, each from ``seed``; the device path's worker item."""
    torch.manual_seed(seed)
    cpu = v2.Compose(vicreg_crop(size, "bicubic"))(image)
    after_cpu = torch.get_rng_state()
    torch.manual_seed(seed)
    item = cropper_for("vicreg_view1", size, "bicubic", 0.875, colour_in_workers=False)(image)
    assert torch.equal(after_cpu, torch.get_rng_state()), "the device path drew a different amount from the RNG"
    return cpu, _on_device(item, size), item


def test_the_boxes_and_flips_are_the_cpu_paths_and_the_pixels_equal_where_both_decode_at_full_size():
    image = _encoded(_picture(90, 120))  # every crop under 2 x 64 px: the workers never decode reduced
    crop = vicreg_crop(64, "bicubic")[0]
    boxes, flips = set(), set()
    for seed in SEEDS:
        cpu, device, item = _both(image, 64, seed)
        torch.manual_seed(seed)
        drawn = crop.draw(image)
        assert item.box == (drawn["top"], drawn["left"], drawn["height"], drawn["width"])
        assert torch.equal(cpu, device), seed  # equal pixels: the same box, the same flip, the same decode
        boxes.add(item.box)
        flips.add(item.flip)
    assert len(boxes) == len(SEEDS) and flips == {True, False}  # the draws vary: the equalities are not vacuous


@pytest.mark.parametrize("size", [32, 64])
def test_large_crops_decoded_at_full_size_stay_within_a_level_or_two_of_the_reduced_decode(size):
    """The workers decode a crop of >= 2 x size at a DCT reduction; the device decodes whole and resizes with
    antialiasing (closer to torchvision's RandomResizedCrop of the full image). Measured on this busy picture
    (400 x 300, blurred noise): mean |diff| over 40 crops 1.65 (32 px) and 1.57 (64 px) levels of 255, the worst
    crop's mean 3.8 and 3.9."""
    image = _encoded(_picture(300, 400))
    diffs = []
    for seed in SEEDS:
        cpu, device, _ = _both(image, size, seed)
        diffs.append((cpu.int() - device.int()).abs().float().mean().item())
    assert np.mean(diffs) < 2.0 and max(diffs) < 4.5
    assert max(diffs) > 0  # some crops were decoded reduced by the workers: the bound was exercised


def test_evaluation_resize_and_centre_crop_on_the_device_are_within_a_level_of_the_workers_pil_resize():
    """Measured: mean |diff| 0.24 levels, max 2 (PIL's bicubic against torchvision's tensor bicubic)."""
    image = _encoded(_picture(300, 400))
    cpu = build_transform("eval", 64, "bicubic", 0.875)(image)
    device = _on_device(cropper_for("eval", 64, "bicubic", 0.875, colour_in_workers=False)(image), 64)
    assert device.shape == cpu.shape == (3, 64, 64)
    diff = (cpu.int() - device.int()).abs()
    assert diff.float().mean() < 0.5 and diff.max() <= 3


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("JPEG", "CMYK")])
def test_pngs_and_cmyk_jpegs_are_cropped_in_the_worker_exactly_as_the_cpu_path(fmt, mode):
    image = _encoded(_picture(60, 80), fmt, mode, name=f"a.{fmt.lower()}")
    for seed in range(5):
        torch.manual_seed(seed)
        cpu = v2.Compose(vicreg_crop(32, "bicubic"))(image)
        torch.manual_seed(seed)
        item = cropper_for("vicreg_view1", 32, "bicubic", 0.875, colour_in_workers=False)(image)
        assert item.data is None and torch.equal(item.pixels, cpu)
        assert torch.equal(_on_device(item, 32), cpu)


def test_greyscale_jpegs_decode_on_the_device_as_rgb():
    image = _encoded(_picture(40, 40), mode="L")
    item = cropper_for("eval", 32, "bicubic", 1.0, colour_in_workers=False)(image)
    assert item.data is not None
    out = _on_device(item, 32, crop_pct=1.0)
    assert (out[0] == out[1]).all() and (out[1] == out[2]).all()
    cpu = build_transform("eval", 32, "bicubic", 1.0)(image)
    assert (cpu.int() - out.int()).abs().float().mean() < 0.5


def test_a_jpeg_whose_body_does_not_decode_names_its_file():
    good = _encoded(_picture(120, 160), name="good.jpg")
    bad = EncodedImage(good.data[: len(good.data) // 2], "broken.jpg")  # the header reads; the body is cut
    cropper = cropper_for("eval", 16, "bicubic", 0.875, colour_in_workers=False)
    crops = EncodedCrops([cropper(good), cropper(bad)])
    with pytest.raises(BadImageError, match=r"cannot decode image broken\.jpg on cpu \(data\.decode_on: device"):
        decode_crops({"i": crops}, {"i": DeviceDecode(16, "bicubic", 0.875)}, "cpu")


def _declaration(train="vicreg_view1", augment_on="device", size=32) -> ImagePreprocessing:
    return ImagePreprocessing("image", size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 0.875, train, "eval",
                              augment_on)


def test_a_vicreg_view_with_its_colour_half_in_the_workers_is_refused():
    with pytest.raises(ValueError, match="set the branch's transform.augment_on: device, or data.decode_on: workers"):
        branch_preprocessors({"image": _declaration(augment_on="workers")}, train=True, decode_on="device")
    branch_preprocessors({"image": _declaration(augment_on="workers")}, train=False, decode_on="device")  # eval: fine


def test_config_errors_are_one_line(tmp_path):
    tree = tiny_config(tmp_path / "run")
    tree["data"]["decode_on"] = "gpu"
    with pytest.raises(ConfigError, match=r"^data.decode_on is 'gpu'; choose one of workers, device$"):
        load_config(tree, [], format_keys=format_options)
    tree["data"]["decode_on"] = "device"
    tree["branches"]["image"]["transform"] = {"train": "vicreg_view2", "size": 16}
    with pytest.raises(ConfigError, match=r"^data.decode_on: device decodes images after the workers, but "
                                          r"branches.image.transform.augment_on is workers .*vicreg_view2.*$"):
        load_config(tree, [], format_keys=format_options)
    tree["branches"]["image"]["transform"]["augment_on"] = "device"
    assert load_config(tree, [], format_keys=format_options).data.decode_on == "device"


@pytest.fixture
def jpegs(tmp_path):
    """24 captioned 30 x 30 JPEGs and one PNG (a view's crop is never 2 x 16 px: the workers decode at full size)."""
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for i in range(25):
        name = f"{i}.png" if i == 7 else f"{i}.jpg"
        Image.fromarray(_picture(30, 30, seed=i)).save(tmp_path / "images" / name)
        rows.append(f"{name},picture number {i}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_equal_the_cpu_paths_two_views_of_one_file_decoding_once(jpegs, workers, monkeypatch):
    """Two branches read each image (a VICReg pair, colour half on the device); the batches equal decode_on: workers'."""
    import mmvicreg.data.device_decode as device_decode

    calls = []
    real = device_decode.decode_jpeg
    monkeypatch.setattr(device_decode, "decode_jpeg", lambda data, **kw: calls.append(len(data)) or real(data, **kw))
    declared = {"view1": _declaration("vicreg_view1", size=16), "view2": _declaration("vicreg_view2", size=16)}
    batches = {}
    for decode_on in ("workers", "device"):
        torch.manual_seed(0)
        loader = make_loader(csv_captions(jpegs / "captions.csv", jpegs / "images"),
                             branch_preprocessors(declared, train=True, decode_on=decode_on), batch_size=8,
                             train=True, workers=workers, seed=3, device_stage=DeviceInput(declared, True, "cpu"))
        batches[decode_on] = list(loader)
    assert len(batches["device"]) == 3 and len(calls) == 3  # one batched decode per batch, for both branches
    assert all(7 <= n <= 8 for n in calls), calls  # each file once (not 16), the PNG (if drawn) cropped in a worker
    for cpu, device in zip(batches["workers"], batches["device"]):
        for key in declared:
            assert torch.equal(cpu[key], device[key]), key
