from pathlib import Path

import numpy as np
import pytest

from engine.errors import TansakuError
from engine.evaluation.attributes import pool_partition, split_indices
from indexer.models.attributes.peta import PETA35, load_peta
from tests.conftest import write_rgb

PETA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "peta"


def _layout(root: Path) -> Path:
    tiny = np.zeros((16, 8, 3), np.uint8)
    for name in ("0001_a.jpg", "0001_b.jpg", "0002_a.jpg", "0003_a.jpg"):  # 0003 has no label line
        write_rgb(root / "VideoSet" / name, tiny)
    (root / "VideoSet" / "Label.txt").write_text(
        "0001 personalMale footwearSneakers upperBodyRed\n0002 hairLong carryingBackpack\n")
    for name in ("10.jpg", "11.jpg"):
        write_rgb(root / "Crops" / name, tiny)
    (root / "Crops" / "Label.txt").write_text("10.jpg accessoryHat\n11.jpg lowerBodyShorts\n")
    return root


def test_reader_ids_aliases_and_per_image_labels(tmp_path: Path) -> None:
    data = load_peta(_layout(tmp_path))
    names = [p.name for p in data.paths]
    assert names == ["10.jpg", "11.jpg", "0001_a.jpg", "0001_b.jpg", "0002_a.jpg"]
    row = dict(zip(names, data.labels, strict=True))
    col = data.names.index
    assert row["0001_b.jpg"][[col("personalMale"), col("footwearSneaker"), col("upperBodyRed")]].all()
    assert row["0001_b.jpg"].sum() == 3 and row["10.jpg"].sum() == 1
    assert set(data.subsets.tolist()) == {"VideoSet", "Crops"}
    assert len(load_peta(tmp_path, per_person=1)) == 4  # one of 0001's two images


def test_splits(tmp_path: Path) -> None:
    train, val, test = pool_partition(100, 3)
    assert (len(train), len(val), len(test)) == (50, 10, 40)
    assert len(set(train) | set(val) | set(test)) == 100
    data = load_peta(_layout(tmp_path))
    train, val, test = split_indices(data, "leave-out:Crops")
    assert set(data.subsets[test]) == {"Crops"} and "Crops" not in set(data.subsets[np.r_[train, val]])
    with pytest.raises(TansakuError, match="subsets: Crops, VideoSet"):
        split_indices(data, "leave-out:Nope")


@pytest.mark.data
def test_real_peta_folder_is_fully_labelled() -> None:
    if not PETA.is_dir():
        pytest.skip(f"PETA subsets not found at {PETA}")
    data = load_peta(PETA)
    assert len(data) == 14850 and len(PETA35) == 35
    assert (data.labels.sum(1) > 0).all()
