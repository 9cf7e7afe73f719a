"""Cases 15-17: a checkpoint that is not the expected file is refused before anything runs from it."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from evar.encoders import create_encoder
from evar.encoders.byola import BYOLA_SHA256, AudioNTT2020
from evar.errors import EvarError
from evar.encoders.weights import download, load_state_dict
from http_server import serve

from .helpers import FAST_PROBE, SECONDS, cli, results_rows

class _Marker:
    """Unpickling this object calls ``os.mknod(marker)``: the marker's existence proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mknod, (self.marker,)


def _prepared(tree) -> None:
    root, csv = tree
    assert cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "w", "--unit-sec", SECONDS).rc == 0


def test_15_download_sha256_mismatch_shows_both_hashes(tmp_path: Path) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    (served / "w.pth").write_bytes(b"not the published file" * 100)
    got = hashlib.sha256((served / "w.pth").read_bytes()).hexdigest()
    expected = "0" * 64
    with serve(served) as (url, _):
        with pytest.raises(EvarError) as info:
            download(f"{url}/w.pth", tmp_path / "cache/w.pth", expected, progress=False)
    message = str(info.value)
    assert f"expected {expected}" in message and f"got {got}" in message and "/w.pth" in message
    assert "\n" not in message
    assert not (tmp_path / "cache/w.pth").exists() and not (tmp_path / "cache/w.pth.part").exists()


def test_15_cached_official_file_with_wrong_sha256_is_refused(tree, evar_dirs: Path) -> None:
    _prepared(tree)
    cached = evar_dirs / "cache/weights/AudioNTT2020-BYOLA-64x96d512.pth"
    cached.parent.mkdir(parents=True)
    torch.save(AudioNTT2020(d=512).state_dict(), cached)  # right format, not the published bytes
    got = hashlib.sha256(cached.read_bytes()).hexdigest()
    run = cli("probe", "--task", "w", *FAST_PROBE[2:], "--model", "byola")
    assert run.rc == 2
    line = run.error_line()
    assert str(cached) in line and f"expected {BYOLA_SHA256[512]}" in line and f"got {got}" in line
    assert "delete it" in line and "--weights" in line
    assert results_rows(evar_dirs / "results").empty


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_16_pickle_that_would_run_code_is_not_executed(tmp_path: Path, container: str) -> None:
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": _Marker(marker)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    if container == "plain pickle":  # the payload is live: an unsafe load does run it
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(EvarError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert not marker.exists()
    assert str(path) in message and "weights_only" in message and "\n" not in message
    if container == "torch.save":
        assert "posix.mknod" in message  # names what it would have run


def test_16_evil_checkpoint_through_the_cli(tree, tmp_path: Path, evar_dirs: Path) -> None:
    _prepared(tree)
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pth"
    torch.save({**AudioNTT2020(d=512).state_dict(), "extra": _Marker(marker)}, path)
    run = cli("probe", "--task", "w", *FAST_PROBE[2:], "--model", "byola", "--weights", path)
    assert run.rc == 2 and not marker.exists()
    assert str(path) in run.error_line() and "posix.mknod" in run.error_line()
    assert results_rows(evar_dirs / "results").empty


def test_17_wrong_architecture_names_the_keys(tmp_path: Path) -> None:
    state = AudioNTT2020(d=512).state_dict()
    first = sorted(state)[0]
    state["head.weight"] = torch.zeros(3, 3)  # unexpected
    state["features.0.weight"] = torch.zeros(1)  # wrong shape (present in BYOL-A as a conv weight)
    del state[first]  # missing
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(EvarError) as info:
        create_encoder("byola", weights=str(path))
    message = str(info.value)
    assert str(path) in message and "BYOL-A" in message
    assert first in message and "head.weight" in message and "features.0.weight" in message
    run = cli("embed", "--task", "nothing", "--model", "byola", "--weights", path)
    assert run.rc == 2 and "head.weight" in run.error_line()
