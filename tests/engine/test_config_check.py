"""The engine reads gallery configurations through the schema: bad or newer ones are user errors."""

from __future__ import annotations

import pytest

from engine.core import _checked, _typed
from engine.errors import TansakuError
from indexer.profiles import resolve_profile


def test_configurations_are_checked_and_versioned() -> None:
    stored = _checked("g", resolve_profile("person"))
    assert stored == {**resolve_profile("person"), "version": 1}
    assert _typed("g", {**stored, "rerank": {"mode": "delf"}}).rerank == {"mode": "delf"}
    with pytest.raises(TansakuError, match="gallery 'g': configuration version 9 was written by a newer"):
        _typed("g", {**stored, "version": 9})
    with pytest.raises(TansakuError, match="gallery 'g': invalid gallery configuration: metric"):
        _checked("g", {**stored, "metric": "cosine"})
