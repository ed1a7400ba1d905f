"""Where Warren keeps its files by default. Must not import anything of Warren's."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "token_path"]


def default_data_dir() -> Path:
    """``$WARREN_DATA_DIR``, else ``$XDG_DATA_HOME/warren``, else ``~/.local/share/warren``."""
    if os.environ.get("WARREN_DATA_DIR"):
        return Path(os.environ["WARREN_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "warren"


def token_path(data_dir: Path) -> Path:
    return data_dir / "admin.token"
