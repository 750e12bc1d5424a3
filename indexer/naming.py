"""Person and camera ids from file names, where the names carry them (Market-1501 style)."""

from __future__ import annotations

import re

# PPPP_cCsS_FFFFFF_NN.jpg; PPPP is -1 for junk, 0000 for distractors. DukeMTMC drops the sS part.
_MARKET = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?_")


def parse_person_name(name: str) -> tuple[int | None, int | None]:
    """(person id, camera id) from a Market-style file name, or (None, None) when it is not one."""
    match = _MARKET.match(name)
    if match is None:
        return None, None
    return int(match.group(1)), int(match.group(2))
