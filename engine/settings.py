"""Settings from the environment: the data folder and the database URL."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.errors import TansakuError

DEFAULT_HOME = Path("~/.local/share/tansaku")


class Settings(BaseModel):
    """Where tansaku keeps its data. `TANSAKU_HOME` and `TANSAKU_DB` override the defaults."""

    model_config = ConfigDict(frozen=True)

    home: Path
    db_url: str

    @classmethod
    def from_env(cls, db: str | None = None, home: str | Path | None = None) -> Settings:
        """Explicit arguments win over the environment, which wins over the defaults."""
        home_path = Path(home or os.environ.get("TANSAKU_HOME") or DEFAULT_HOME).expanduser()
        url = db or os.environ.get("TANSAKU_DB") or f"sqlite:///{home_path / 'tansaku.db'}"
        return cls(home=home_path, db_url=url)

    def ensure_home(self) -> None:
        """Create the data folder and check that it can be written."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise TansakuError(
                f"data folder {self.home} is not writable ({exc.strerror or exc}); "
                "set TANSAKU_HOME to a folder you can write"
            ) from exc
