from pathlib import Path

import numpy as np
import pytest

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
