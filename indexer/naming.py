"""Person and camera ids from file names, where the names carry them (Market-1501 style).

The one parser of such names: indexing reads the labels of person galleries with it, and the
Market-1501 loader (`indexer.datasets.reid`) and PCB training read their data sets with it.
Cameras are numbered as the names write them, from 1 (`c1` is camera 1); protocols only compare
camera ids for equality.
"""

from __future__ import annotations

import re
from pathlib import Path

# PPPP_cCsS_FFFFFF_NN.jpg; PPPP is -1 for junk, 0000 for distractors. DukeMTMC drops the sS part.
_MARKET = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?_")
_MARKET_FULL = re.compile(r"^-?\d+_c\d+s\d+_\d+_\d+\.jpg$", re.IGNORECASE)


def parse_market_name(name: str, strict: bool = True) -> tuple[int, int]:
    """(person id, camera id from 1) of a Market-1501 file name (a path's folders are ignored).

    Person id -1 marks junk, 0 a distractor. `strict`: the whole name must be Market-1501's
    `PPPP_cCsS_FFFFFF_NN.jpg`; otherwise the `PPPP_cC` prefix suffices (DukeMTMC-reID's
    `0001_c2_f0046182.jpg` too). Anything else raises a ValueError naming the file.
    """
    base = Path(name).name
    match = _MARKET.match(base)
    if match is None or (strict and not _MARKET_FULL.match(base)):
        raise ValueError(f"not a Market-1501 image name (PPPP_cCsS_FFFFFF_NN.jpg): {name!r}")
    pid, cam = int(match.group(1)), int(match.group(2))
    if pid < -1 or cam < 1:
        raise ValueError(f"Market-1501 image name {name!r}: bad person id {pid} or camera {cam}")
    return pid, cam


def parse_person_name(name: str) -> tuple[int | None, int | None]:
    """(person id, camera id) from a Market-style file name, or (None, None) when it is not one."""
    try:
        return parse_market_name(name, strict=False)
    except ValueError:
        return None, None
