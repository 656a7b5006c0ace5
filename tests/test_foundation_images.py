"""Every bad-input case: converted to RGB when it is an image, a clear per-file error when it is not."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sliq_cli.images import ImageLoadError, jpeg_orientation, jpeg_size, list_images, load_image


@pytest.fixture()
def photo(example_photos):
    return Image.open(example_photos[0]).convert("RGB")


def test_formats_are_converted(tmp_path, photo):
    small = photo.resize((96, 64))
    cases = {
        "cmyk.jpg": small.convert("CMYK"),
        "grey.jpg": small.convert("L"),
        "grey_alpha.png": small.convert("LA"),
        "rgba.png": small.convert("RGBA"),
        "palette.png": small.convert("P"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
    for name in cases:
        out = load_image(tmp_path / name)
        assert out.mode == "RGB" and out.size == (96, 64), name


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = np.asarray(load_image(tmp_path / "deep.png"))[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert 100 < out.mean() < 155  # a clip at 255 would give ~255 nearly everywhere


def test_float_images_round_as_tensors_do(tmp_path):
    import torch

    from sliq_cli.tensors import to_uint8

    values = np.array([[0.5, 1.5, 2.5, 100.4, 254.6]], dtype=np.float32)  # 0..255 floats: no rescale
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    out = np.asarray(load_image(tmp_path / "float.tif"))[0, :, 0]
    assert out.tolist() == [0, 2, 2, 100, 255]  # half to even; truncation gave 254 for 254.6
    assert out.tolist() == to_uint8(torch.from_numpy(values[0]), scale=1).tolist()


def test_exif_orientation_is_applied(tmp_path, photo):
    small = photo.resize((90, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    small.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rotated.jpg").size == (60, 90)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image\n" * 10, "not an image"),
    ],
)
def test_broken_files(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason):
        load_image(tmp_path / name)


def test_truncated_jpeg(tmp_path, example_photos):
    data = example_photos[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt"):
        load_image(tmp_path / "cut.jpg")


def test_missing_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("L", (300, 300)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # Pillow raises above twice this
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_jpeg_size_reads_the_frame_header(example_photos, photo):
    for path in example_photos:  # camera JPEGs as they are, then variants with other segments before the frame
        assert jpeg_size(Path(path).read_bytes()) == Image.open(path).size
    exif = Image.Exif()
    exif[0x0112] = 6
    variants = {"progressive": {"progressive": True}, "exif": {"exif": exif}, "icc": {"icc_profile": b"x" * 70000},
                "grey": {}, "optimized": {"optimize": True, "quality": 40}}
    for name, options in variants.items():
        buf = io.BytesIO()
        (photo.convert("L") if name == "grey" else photo.resize((123, 77))).save(buf, "JPEG", **options)
        data = buf.getvalue()
        assert jpeg_size(data) == Image.open(io.BytesIO(data)).size, name
        assert jpeg_size(data[:30]) is None, name  # cut before the frame header
    assert jpeg_size(b"\x89PNG\r\n\x1a\n" + bytes(40)) is None and jpeg_size(b"") is None



def _tiff_with_orientation(order: str, orientation: int, kind: int = 3) -> bytes:
    """A TIFF structure (EXIF's payload) in either byte order: IFD0 with a make tag, then Orientation."""
    e = "little" if order == "II" else "big"
    value = orientation.to_bytes(2, e) + bytes(2) if kind == 3 else orientation.to_bytes(4, e)
    entries = (0x010F).to_bytes(2, e) + (2).to_bytes(2, e) + (4).to_bytes(4, e) + b"cam\x00"
    entries += (0x0112).to_bytes(2, e) + kind.to_bytes(2, e) + (1).to_bytes(4, e) + value
    return order.encode() + (42).to_bytes(2, e) + (8).to_bytes(4, e) + (2).to_bytes(2, e) + entries + bytes(4)


def _with_app1(data: bytes, payload: bytes) -> bytes:
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def test_jpeg_orientation_reads_what_pillow_reads(example_photos, photo):
    from PIL import ImageOps

    small = photo.resize((60, 40))
    buf = io.BytesIO()
    small.save(buf, "JPEG")
    plain = buf.getvalue()
    cases = {"none": plain}
    for o in (1, 3, 6, 8, 9):  # 9 is no orientation: Pillow leaves the image as stored
        exif = Image.Exif()
        exif[0x0112] = o
        buf = io.BytesIO()
        small.save(buf, "JPEG", exif=exif.tobytes())
        cases[f"pillow-{o}"] = buf.getvalue()
    for order in ("II", "MM"):
        for o in (2, 5, 7):
            cases[f"{order}-{o}"] = _with_app1(plain, b"Exif\x00\x00" + _tiff_with_orientation(order, o))
    cases["long-6"] = _with_app1(plain, b"Exif\x00\x00" + _tiff_with_orientation("MM", 6, kind=4))
    cases["xmp-8"] = _with_app1(plain, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description "
                                       b'tiff:Orientation="8"/></x:xmpmeta>')
    cases["exif-before-xmp"] = _with_app1(cases["xmp-8"], b"Exif\x00\x00" + _tiff_with_orientation("II", 3))
    cases["cut-exif"] = _with_app1(plain, b"Exif\x00\x00" + _tiff_with_orientation("II", 6)[:12])
    for path in example_photos:
        cases[Path(path).name] = Path(path).read_bytes()
    expected = {"none": 1, "pillow-1": 1, "pillow-3": 3, "pillow-6": 6, "pillow-8": 8, "pillow-9": 1, "II-2": 2,
                "II-5": 5, "II-7": 7, "MM-2": 2, "MM-5": 5, "MM-7": 7, "long-6": 6, "xmp-8": 8, "exif-before-xmp": 3,
                "cut-exif": 1}
    for name, data in cases.items():
        o = jpeg_orientation(data)
        assert o == expected.get(name, 1), name
        img = Image.open(io.BytesIO(data))
        assert ImageOps.exif_transpose(img).tobytes() == _turned(img, o).tobytes(), name  # Pillow reads it so too
    assert jpeg_orientation(b"\x89PNG\r\n\x1a\n" + bytes(40)) == 1 and jpeg_orientation(b"") == 1


def _turned(img, orientation: int):
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return img.copy() if method is None else img.transpose(method)

def test_max_pixels_downscales_large_images(tmp_path, photo):
    photo.save(tmp_path / "big.jpg")
    w, h = photo.size
    out = load_image(tmp_path / "big.jpg", max_pixels=w * h // 4)
    assert out.width * out.height <= w * h // 4 and abs(out.width / out.height - w / h) < 0.02


def test_list_images(tmp_path, photo):
    (tmp_path / "sub").mkdir()
    photo.resize((8, 8)).save(tmp_path / "a.png")
    photo.resize((8, 8)).save(tmp_path / "sub" / "b.JPG")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([str(tmp_path)])] == ["a.png"]
    assert [p.name for p in list_images([str(tmp_path)], recursive=True)] == ["a.png", "b.JPG"]
    stdin = io.StringIO(f"{tmp_path / 'a.png'}\n\n{tmp_path / 'missing.png'}\n")
    assert [p.name for p in list_images(["-"], stdin=stdin)] == ["a.png", "missing.png"]
