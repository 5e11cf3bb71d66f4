"""Issue 17's input path: crops drawn from the header, JPEGs decoded at a DCT reduction, uint8 until the device.

The reduced decode must not change the augmentation distribution: the crop boxes it takes are read back from the
output pixels of an image whose colours encode their own coordinates, and compared with the full decode's by a
two-sample Kolmogorov–Smirnov test. Late decode failures must still follow the bad-data policy.
"""

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from mmvicreg.data.batching import BranchDataset
from mmvicreg.data.sources.captions import csv_captions
from mmvicreg.data.sources.encoded import EncodedImage, largest_reduction
from mmvicreg.data.sources.io import BadImageError
from mmvicreg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeResizedCrop,
    build_transform,
    normalize_images,
)

W, H, OUT = 512, 384, 32  # crops of 64+ px (scale >~ 0.03) decode at 1/2, 128+ px at 1/4, 256+ px at 1/8


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coordinates():
    """A JPEG whose red channel is x / W and green channel is y / H (in 0..255): a crop's pixels tell its box."""
    x = np.linspace(0, 255, W)[None, :].repeat(H, 0)
    y = np.linspace(0, 255, H)[:, None].repeat(W, 1)
    return _jpeg(np.stack([x, y, np.full_like(x, 128)], -1).round().astype(np.uint8))


def _observed_boxes(crop, data: bytes, reduced: bool, draws: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(scale, log ratio)`` of the boxes the crop took, read back from its output's edge colours."""
    scales, ratios, used = [], [], []
    for _ in range(draws):
        image = EncodedImage(data, "coordinates") if reduced else EncodedImage.wrap(Image.open(io.BytesIO(data)))
        out = crop(image).double()
        used.append(min(image.reductions))  # the reduction the decode ran at
        # edge pixel centres sit half an output pixel inside the box: extrapolate to the box's edges
        x0, x1 = out[0, :, 0].mean() / 255 * W, out[0, :, -1].mean() / 255 * W
        y0, y1 = out[1, 0, :].mean() / 255 * H, out[1, -1, :].mean() / 255 * H
        width, height = (x1 - x0) * OUT / (OUT - 1), (y1 - y0) * OUT / (OUT - 1)
        scales.append((width * height / (W * H)).item())
        ratios.append(np.log((width / height).item()))
    return np.array(scales), np.array(ratios), used


def test_reduced_decode_keeps_the_published_crop_distribution(coordinates):
    crop = DecodeResizedCrop(OUT, scale=(0.08, 1.0), antialias=True)
    torch.manual_seed(0)
    full_scale, full_ratio, _ = _observed_boxes(crop, coordinates, reduced=False, draws=1500)
    torch.manual_seed(1)
    scale, ratio, used = _observed_boxes(crop, coordinates, reduced=True, draws=1500)
    assert {2, 4, 8} <= set(used), f"the test must exercise the reductions; used {sorted(set(used))}"
    assert ks_2samp(scale, full_scale).pvalue > 0.001
    assert ks_2samp(ratio, full_ratio).pvalue > 0.001
    # and both are the published distribution: scale in [0.08, 1], ratio in [3/4, 4/3] (read back to ~1%)
    assert 0.07 < scale.min() and scale.max() < 1.02 and abs(scale.mean() - full_scale.mean()) < 0.03
    assert np.log(0.72) < ratio.min() and ratio.max() < np.log(1.39)


def test_reduced_decode_gives_the_pixels_of_the_full_decode(coordinates):
    """Same seed, same box: the 1/r decode's crop differs from the full decode's by JPEG-scaling noise only."""
    crop = DecodeResizedCrop(OUT, scale=(0.5, 1.0), antialias=True)  # large boxes: reductions 4 and 8
    for seed in range(10):
        torch.manual_seed(seed)
        reduced = crop(EncodedImage(coordinates, "c")).float()
        torch.manual_seed(seed)
        full = crop(EncodedImage.wrap(Image.open(io.BytesIO(coordinates)))).float()
        assert (reduced - full).abs().mean() < 2.0, f"seed {seed}: the reduced crop is not the same box"


def test_largest_reduction_keeps_the_crop_at_least_the_output_size():
    assert largest_reduction(400, 300, 224, 224) == 1
    assert largest_reduction(448, 460, 224, 224) == 2
    assert largest_reduction(1800, 1800, 224, 224) == 8
    assert largest_reduction(1800, 447, 224, 224) == 1  # one side too short
    assert largest_reduction(10, 10, 224, 224) == 1  # upsampling: never reduce


def test_one_image_decodes_once_for_both_views(coordinates):
    image = EncodedImage(coordinates, "c")
    full, r = image.decode(1)
    again, r2 = image.decode(4)  # a decode at a smaller reduction serves a larger one
    assert r == r2 == 1 and again is full and tuple(full.shape) == (H, W, 3)


def test_device_normalisation_equals_the_cpu_float_path():
    """What the branch does to a uint8 batch on its device = yesterday's per-image CPU ToDtype + Normalize."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    cpu = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])
    expected = torch.stack([cpu(image) for image in images])
    torch.testing.assert_close(normalize_images(images, IMAGENET_MEAN, IMAGENET_STD), expected, atol=1e-6, rtol=0)
    if torch.cuda.is_available():
        on_device = normalize_images(images.cuda(), IMAGENET_MEAN, IMAGENET_STD).cpu()
        torch.testing.assert_close(on_device, expected, atol=1e-6, rtol=0)


def _views():
    return {name: ("image", build_transform(name, 16), None) for name in ("vicreg_view1", "vicreg_view2")}


@pytest.fixture
def truncated(tmp_path):
    """Four captioned JPEGs whose second is cut in half: its header reads, its body does not decode."""
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for name in "abcd":
        data = _jpeg(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        (tmp_path / "images" / f"{name}.jpg").write_bytes(data[: len(data) // 2] if name == "b" else data)
        rows.append(f"{name}.jpg,a photo {name}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_a_body_that_fails_to_decode_in_the_worker_follows_the_skip_policy(truncated, caplog):
    src = csv_captions(truncated / "captions.csv", truncated / "images", on_bad_image="skip")
    dataset = BranchDataset(src, _views())
    assert dataset.encoded  # the header was enough to load it: the decode happens in the transforms
    with caplog.at_level(logging.WARNING, logger="mmvicreg.data"):
        items = [dataset[i] for i in range(4)]
    assert all(item["vicreg_view1"].dtype == torch.uint8 for item in items)
    assert src.num_skipped == 1 and src.skipped[0][0].endswith("b.jpg") and src.skipped[0][1] == "corrupt"
    assert "b.jpg" in caplog.text


def test_under_pairs_all_a_late_decode_failure_gives_the_next_good_image_not_another_pair(truncated):
    """Issue 25: sample k of ``pairs: all`` is a (image, caption) pair. When its image fails to decode in the
    transforms, the retry must read sample k again (the source then hands the next good image), not the sample
    whose number is the failed image's store index (a pair of another image)."""
    rows = ["image,caption"] + [f"{name}.jpg,photo {name} take {t}" for name in "abcd" for t in range(3)]
    (truncated / "captions.csv").write_text("\n".join(rows) + "\n")
    src = csv_captions(truncated / "captions.csv", truncated / "images", pairs="all", on_bad_image="skip")
    assert len(src) == 12  # 4 images x 3 captions; pairs 3, 4, 5 are those of b.jpg, whose body is cut
    dataset = BranchDataset(src, _views(), extra_fields=("image_id", "caption"))
    assert dataset.encoded  # undecoded until the crop
    torch.manual_seed(0)
    item = dataset[4]
    assert item["image_id"] == "c.jpg" and item["caption"].startswith("photo c ")  # the next good image
    assert src.num_skipped == 1 and src.skipped[0][0].endswith("b.jpg")


def test_a_body_that_fails_to_decode_in_the_worker_names_the_file_under_error(truncated):
    dataset = BranchDataset(csv_captions(truncated / "captions.csv", truncated / "images"), _views())
    with pytest.raises(BadImageError, match=r"cannot decode image .*b\.jpg.*on_bad_image='skip'"):
        dataset[1]


def test_a_user_transform_that_wants_pil_images_gets_them(truncated):
    seen = []
    dataset = BranchDataset(csv_captions(truncated / "captions.csv", truncated / "images"),
                            {"image": ("image", lambda im: seen.append(type(im)) or torch.zeros(3), None)})
    assert not dataset.encoded
    dataset[0]
    assert seen == [Image.Image] or issubclass(seen[0], Image.Image)


def _pillow_decode(data: bytes, r: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if r > 1:
            img.draft("RGB", (img.width // r, img.height // r))
        return np.asarray(img.convert("RGB"))


def _jpegs() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:203, 0:317]
    photo = np.stack([(x + y) % 256, (3 * x) % 256, (5 * y) % 256], axis=-1).astype(np.uint8)
    photo = np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    grey, rotated = io.BytesIO(), io.BytesIO()
    Image.fromarray(photo[:, :, 0]).save(grey, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° on display": neither decoder applies it
    Image.fromarray(photo).save(rotated, "JPEG", exif=exif)
    jpegs = [("rgb", _jpeg(photo)), ("grey", grey.getvalue()), ("exif-rotated", rotated.getvalue())]
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco-mini" / "val2017"  # real ones if present
    return jpegs + [(p.name, p.read_bytes()) for p in sorted(shared.glob("*.jpg"))[:6]]


@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_the_jpeg_decode_gives_pillows_pixels_at_every_reduction(reduction):
    for name, data in _jpegs():
        pixels, r = EncodedImage(data, name).decode(reduction)
        assert r == reduction
        expected = _pillow_decode(data, reduction)
        assert pixels.shape == expected.shape and np.array_equal(pixels.numpy(), expected), name


def test_a_jpeg_opencv_does_not_take_goes_to_pillow():
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), (200, 40, 90), np.uint8)).convert("CMYK").save(buffer, "JPEG")
    image = EncodedImage(buffer.getvalue(), "cmyk.jpg")
    assert image.mode == "CMYK"
    assert np.array_equal(image.decode(1)[0].numpy(), _pillow_decode(buffer.getvalue(), 1))
