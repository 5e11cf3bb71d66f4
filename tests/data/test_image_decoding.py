"""Issue 24: images decode correctly and safely.

* every mode becomes RGB through one conversion: 16-bit greyscale is scaled (``v / 257``), not clipped to white;
  transparency is composited over white; through the paths a file source's loader really takes;
* an image over ``PIL.Image.MAX_IMAGE_PIXELS`` is a bad image under the policy (skipped and counted, or one line);
* evaluation and search decode a huge image at a reduced scale (``open_image_for_eval``, the eval transform).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.data import (
    FolderImages,
    ImageTooLargeError,
    LazyImages,
    RawItems,
    convert_rgb,
    csv_captions,
    decode_views,
    make_loader,
    open_image,
    open_image_for_eval,
)
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shards import BadDataCounts, decode_sample
from mmvicreg.data.transforms import build_transform

GREY16, EXPECTED = 30000, 30000 / 257  # ≈ 116.7


def _png16(path, value=GREY16, size=(40, 32)):
    Image.fromarray(np.full(size[::-1], value, np.uint16)).save(path)  # mode I;16
    with Image.open(path) as img:
        assert img.mode == "I;16"
    return path


def _mean(pixels) -> float:
    return float(np.asarray(pixels, dtype=np.float64).mean())


# ------------------------------------------------------------------------------------------ modes


def test_a_16_bit_png_decodes_to_its_level_on_every_path_of_a_file_source(tmp_path):
    (tmp_path / "f" / "grey").mkdir(parents=True)
    path = _png16(tmp_path / "f" / "grey" / "a.png")
    assert abs(_mean(open_image(path)) - EXPECTED) < 1
    for name in ("eval", "light"):  # the eval transform (full decode) and a training crop (EncodedImage.decode)
        (view,) = decode_views(path, names=(name,), size=16)
        assert view.dtype == torch.uint8 and abs(_mean(view) - EXPECTED) < 1, name
    source = FolderImages(tmp_path / "f")
    assert abs(_mean(source.load_image(0)) - EXPECTED) < 1
    for name in ("eval", "light"):  # the loader of a file source: images read undecoded, decoded by the transform
        loader = make_loader(source, {"img": ("image", build_transform(name, 16), None)}, batch_size=1)
        batch = next(iter(loader))
        assert batch["img"].shape == (1, 3, 16, 16) and abs(_mean(batch["img"]) - EXPECTED) < 1, name


def _modes() -> dict[str, tuple[Image.Image, tuple[int, int, int]]]:
    """An image of each mode, with the RGB pixel it must give."""
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    p.info["transparency"] = 1  # palette entry 1 is transparent: over white
    big16 = Image.frombytes("I;16B", (4, 4), np.full((4, 4), GREY16, ">u2").tobytes())
    return {
        "I;16": (Image.fromarray(np.full((4, 4), GREY16, np.uint16)), (117,) * 3),
        "I;16B": (big16, (117,) * 3),
        "I": (Image.fromarray(np.full((4, 4), GREY16, np.int32)), (117,) * 3),
        "F 0..1": (Image.fromarray(np.full((4, 4), 0.5, np.float32)), (128,) * 3),
        "F 0..255": (Image.fromarray(np.full((4, 4), 100.0, np.float32)), (100,) * 3),
        "LA": (Image.new("LA", (4, 4), (0, 0)), (255,) * 3),  # a transparent black pixel: white
        "RGBA": (Image.new("RGBA", (4, 4), (200, 100, 0, 255)), (200, 100, 0)),
        "RGBA half": (Image.new("RGBA", (4, 4), (0, 0, 0, 128)), (127,) * 3),
        "P transparency": (p, (255,) * 3),
        "CMYK": (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        "L": (Image.new("L", (4, 4), 77), (77,) * 3),
    }


@pytest.mark.parametrize("name", sorted(_modes()))
def test_convert_rgb_takes_every_mode(name):
    image, pixel = _modes()[name]
    rgb = convert_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert np.abs(np.asarray(rgb, np.int64) - np.array(pixel)).max() <= 1, np.asarray(rgb)[0, 0]


def test_the_store_of_encoded_bytes_converts_a_16_bit_png_too():
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), GREY16, np.uint16)).save(buf, "PNG")
    pixels, r = EncodedImage(buf.getvalue(), "grey.png").decode(4)
    assert r == 1 and abs(_mean(pixels) - EXPECTED) < 1
    raw = {"__key__": "0", "__url__": "s.tar", "png": buf.getvalue(), "txt": b"grey"}
    assert abs(_mean(decode_sample(raw, BadDataPolicy())["image"]) - EXPECTED) < 1  # streamed shards


# ------------------------------------------------------------------------------------------ pixel limit


@pytest.fixture
def big_folder(tmp_path, monkeypatch):
    """Four PNGs of one class; ``big.png`` (40x40 = 1600 px) is over a lowered limit of 1000 pixels."""
    (tmp_path / "f" / "c").mkdir(parents=True)
    for name, side in (("a", 20), ("big", 40), ("c", 20), ("d", 20)):
        Image.new("RGB", (side, side), (10, 200, 30)).save(tmp_path / "f" / "c" / f"{name}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return tmp_path / "f"


@pytest.mark.parametrize("transform", ["vicreg_view1", "eval"])
def test_an_image_over_the_pixel_limit_is_skipped_and_counted(big_folder, transform):
    source = FolderImages(big_folder, on_bad_image="skip")
    sizes = []
    loader = make_loader(source, {"img": ("image", build_transform(transform, 8), None)}, batch_size=2)
    assert sum(len(b["img"]) for b in loader) == 4
    for i in range(4):
        sizes.append(source[i]["image"].size)
    assert (40, 40) not in sizes  # left out: its place taken by the next good image
    report = source.data_report()
    assert report["skipped_images"] == 1 and report["skipped_image_reasons"] == {"over the pixel limit": 1}
    assert report["skipped_while_loading"][0][0].endswith("big.png")
    assert Image.MAX_IMAGE_PIXELS == 1000  # read, never changed


@pytest.mark.parametrize("side", [40, 50])  # Pillow warns over the limit and refuses over twice it
def test_an_image_over_the_pixel_limit_is_one_line_under_error(big_folder, side):
    Image.new("RGB", (side, side)).save(big_folder / "c" / "big.png")
    source = FolderImages(big_folder)
    loader = make_loader(source, {"img": ("image", build_transform("vicreg_view1", 8), None)}, batch_size=4)
    with pytest.raises(ImageTooLargeError) as err:
        list(loader)
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None
    assert "big.png" in message and f"{side * side} pixels" in message
    assert "PIL.Image.MAX_IMAGE_PIXELS" in message and "trust" in message
    dims = f"{side}x{side} = " if side == 40 else ""  # over twice the limit Pillow refuses before giving the size
    with pytest.raises(ImageTooLargeError, match=f"image .*big.png has {dims}{side * side} pixels"):
        open_image(big_folder / "c" / "big.png")


def test_a_streamed_image_over_the_pixel_limit_is_counted_by_its_reason(monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    counts = BadDataCounts()
    raw = {"__key__": "7", "__url__": "s.tar", "png": buf.getvalue(), "txt": b"a caption"}
    assert decode_sample(raw, BadDataPolicy(on_bad_image="skip"), counts) is None
    assert counts.as_dict() == {"over the pixel limit": 1}


# ------------------------------------------------------------------------------------------ eval at reduced scale


def _photo(path, size=(1200, 1100)):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[1] // 100, size[0] // 100, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BICUBIC).save(path, quality=92)  # smooth, like a photo
    return path


def test_open_image_for_eval_reduces_and_refuses_only_what_pillow_refuses(tmp_path, monkeypatch):
    path = _photo(tmp_path / "p.jpg")
    image = open_image_for_eval(path, 256)
    assert image.mode == "RGB" and image.size == (279, 256)
    with Image.open(path) as full:
        reference = full.convert("RGB").resize(image.size, Image.BICUBIC, reducing_gap=2.0)
    assert np.abs(np.asarray(image, np.int64) - np.asarray(reference, np.int64)).mean() < 3
    assert open_image_for_eval(path, 4000).size == (1200, 1100)  # never enlarged
    assert abs(_mean(open_image_for_eval(_png16(tmp_path / "g.png"), 16)) - EXPECTED) < 1
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the photo is 1.32 M px: over it, under twice it
    assert open_image_for_eval(path, 64).size == (70, 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600_000)
    with pytest.raises(ImageTooLargeError, match=r"p\.jpg has 1320000 pixels.*MAX_IMAGE_PIXELS") as err:
        open_image_for_eval(path, 64)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nothere.jpg does not exist"):
        open_image_for_eval(tmp_path / "nothere.jpg", 64)


def test_the_eval_loader_decodes_a_huge_jpeg_reduced(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    _photo(tmp_path / "images" / "big.jpg")
    (tmp_path / "captions.csv").write_text("image,caption\nbig.jpg,a big photo\n")
    source = csv_captions(tmp_path / "captions.csv", tmp_path / "images")
    asked = []
    decode = EncodedImage.decode
    monkeypatch.setattr(EncodedImage, "decode", lambda self, r=1: asked.append(r) or decode(self, r))
    eval64 = build_transform("eval", 64)  # resize 73: a JPEG at least 4x that each way decodes reduced
    images = source.eval_set().images
    assert isinstance(images, LazyImages)
    batch = next(iter(make_loader(RawItems(images, "image"), {"img": ("image", eval64, None)}, batch_size=1)))
    assert asked == [4]  # 1100 px // 4 = 275 >= 2 x 73, // 8 is not
    full = eval64(open_image(tmp_path / "images" / "big.jpg"))
    assert (batch["img"][0].double() - full.double()).abs().mean() < 3
