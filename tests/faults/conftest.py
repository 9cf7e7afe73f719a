"""Fixtures of the fault suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_task_tree


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A small custom task's audio root and meta.csv (file,label,split)."""
    return make_task_tree(tmp_path / "data")
