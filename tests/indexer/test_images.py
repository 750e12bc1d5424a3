from pathlib import Path

import cv2
import numpy as np
import pytest

from indexer import images
from indexer.images import ImageReadError, content_hash, discover_images, read_image
from tests.conftest import sample_image, write_rgb


def test_discovery_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path: Path) -> None:
    image = sample_image("coffee", 64)
    write_rgb(tmp_path / "b.jpg", image)
    write_rgb(tmp_path / "a" / "c.PNG", image)
    write_rgb(tmp_path / ".thumbs" / "d.jpg", image)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path)]
    assert found == ["a/c.PNG", "b.jpg"]


def test_read_image_gives_rgb(tmp_path: Path) -> None:
    image = sample_image("coffee", 64)
    path = write_rgb(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_image(path), image)  # PNG is lossless; channels in RGB order


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
    ],
)
def test_unusable_files_name_the_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert info.value.path == path


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    good = write_rgb(tmp_path / "good.jpg", sample_image("astronaut", 256))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)


def test_content_hash_follows_content_not_name(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"same")
    (tmp_path / "b").write_bytes(b"same")
    (tmp_path / "c").write_bytes(b"other")
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b") != content_hash(tmp_path / "c")


# ------------------------------------------------------------- decoding no larger than needed


def _jpeg(path: Path, image: np.ndarray, orientation: int | None = None) -> Path:
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    PILImage.fromarray(image).save(path, quality=95, exif=exif.tobytes())
    return path


def test_jpeg_is_reduced_while_decoding_to_twice_what_the_extractors_use(tmp_path: Path) -> None:
    image = cv2.resize(sample_image("astronaut", 512), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    path = _jpeg(tmp_path / "big.jpg", image)
    full = read_image(path)
    small = read_image(path, max_side=100)
    assert small.shape == (150, 200, 3)  # DCT scaling by 1/8: longer side 200 = 2 x max_side
    # ... the same picture: within a few grey levels of the full decode shrunk by area averaging
    expected = cv2.resize(full, (200, 150), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(small - expected).mean() < 2.0
    # the full image is never decoded: it does not fit a limit that its 1/8 scale fits
    with pytest.raises(ImageReadError, match="decoding limit"):
        read_image(path, max_pixels=1600 * 1200 - 1)
    assert read_image(path, max_side=100, max_pixels=200 * 150).shape == (150, 200, 3)
    # the largest DCT scale that keeps the longer side at least 2 x max_side: 1/2 for 400
    assert read_image(path, max_side=400).shape == (600, 800, 3)


def test_images_up_to_twice_max_side_decode_exactly_as_at_full_size(tmp_path: Path) -> None:
    image = sample_image("coffee", 400)  # 400 x 267
    jpg, png = _jpeg(tmp_path / "c.jpg", image), write_rgb(tmp_path / "c.png", image)
    for path in (jpg, png):
        np.testing.assert_array_equal(read_image(path, max_side=200), read_image(path))


def test_other_formats_are_box_reduced_after_decoding(tmp_path: Path) -> None:
    image = cv2.resize(sample_image("chelsea", 400), (800, 600), interpolation=cv2.INTER_CUBIC)
    path = write_rgb(tmp_path / "big.png", image)
    small = read_image(path, max_side=100)
    assert small.shape == (150, 200, 3)  # 4 x 4 blocks averaged
    blocks = image.reshape(150, 4, 200, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - blocks).max() <= 1.0  # rounding only


def test_exif_orientation_is_honoured_when_reduced(tmp_path: Path) -> None:
    image = np.zeros((1200, 1600, 3), np.uint8)
    image[:600, :800] = 255  # bright top-left quarter
    path = _jpeg(tmp_path / "rotated.jpg", image, orientation=6)  # "rotate 90 clockwise to view"
    upright = read_image(path, max_side=100)
    assert upright.shape == (200, 150, 3)
    assert upright[:90, 80:].mean() > 200 and upright[110:, :70].mean() < 50  # now top-right
    np.testing.assert_array_equal(read_image(path).shape, (1600, 1200, 3))


def test_oversize_png_is_refused_before_decoding_naming_file_size_and_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    path = write_rgb(tmp_path / "huge.png", sample_image("rocket", 300))  # 300 x 200
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 50_000)  # the default, lowered

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded an image that is over the limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for max_side in (None, 50):  # PNG cannot be reduced while decoding: the limit is on its full size
        with pytest.raises(ImageReadError) as info:
            read_image(path, max_side)
        assert info.value.path == path and "huge.png" in str(info.value)
        assert "300x200 px" in info.value.reason and "0.05 Mpx decoding limit" in info.value.reason


@pytest.mark.parametrize("limit", [1000, 400])  # a warning past the limit, an error past twice it
def test_decompression_bombs_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    from PIL import Image as PILImage

    path = write_rgb(tmp_path / "bomb.png", np.zeros((40, 40, 3), np.uint8))  # 1600 px
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        read_image(path, max_side=8)
    assert info.value.path == path


def test_describers_say_how_large_an_image_their_extractors_use() -> None:
    from indexer.describe import Describer
    from indexer.profiles import resolve_profile

    assert Describer(resolve_profile("landmark")).max_side == 1024  # RootSIFT's; GeM uses 512
    assert Describer(resolve_profile("person")).max_side == 384  # person crops need little
    unbounded = resolve_profile("landmark")
    unbounded["local"]["conf"]["max_side"] = None
    assert Describer(unbounded).max_side is None
