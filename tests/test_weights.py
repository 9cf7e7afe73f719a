"""Official-weights handling: verified resumable download from a local server, safe loading, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from evar.errors import EvarError
from evar.encoders.weights import WeightFile, download, load_state_dict, resolve_weights
from http_server import serve


def _payload(tmp_path: Path) -> tuple[Path, str]:
    served = tmp_path / "served"
    served.mkdir()
    path = served / "model.pth"
    torch.save({"w": torch.arange(50000, dtype=torch.float32)}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_resumes(tmp_path: Path) -> None:
    path, sha = _payload(tmp_path)
    data = path.read_bytes()
    dest = tmp_path / "cache" / "model.pth"
    dest.parent.mkdir()
    dest.with_name("model.pth.part").write_bytes(data[:1000])  # an interrupted earlier download
    with serve(path.parent) as (url, log):
        download(f"{url}/model.pth", dest, sha, progress=False)
    assert dest.read_bytes() == data
    assert log == ["/model.pth bytes=1000-"]
    assert not dest.with_name("model.pth.part").exists()
    assert torch.equal(load_state_dict(dest)["w"], torch.arange(50000, dtype=torch.float32))


def test_download_rejects_wrong_checksum(tmp_path: Path) -> None:
    path, _ = _payload(tmp_path)
    dest = tmp_path / "cache" / "model.pth"
    with serve(path.parent) as (url, _), pytest.raises(EvarError, match="sha256 mismatch"):
        download(f"{url}/model.pth", dest, "0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("model.pth.part").exists()


def test_resolve_weights_downloads_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha = _payload(tmp_path)
    with serve(path.parent) as (url, log):
        toy = WeightFile("model.pth", f"{url}/model.pth", sha, "the toy page")
        got = resolve_weights(toy)
        assert got == tmp_path / "cache" / "weights" / "model.pth"
        assert resolve_weights(toy) == got and len(log) == 1  # second call: from the cache
    with pytest.raises(EvarError, match="weights file not found: /nowhere.pth"):
        resolve_weights(toy, "/nowhere.pth")


def test_missing_weights_without_download_say_where_to_get_them() -> None:
    with pytest.raises(EvarError, match=r"https://example.org/x.pth \(see the x page\)"):
        resolve_weights(WeightFile("x.pth", "https://example.org/x.pth", None, "the x page"), allow_download=False)


class NotTensors:
    """An arbitrary object: loading it would need unpickling code, which weights_only forbids."""


def test_unsafe_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"obj": NotTensors()}, path)
    with pytest.raises(EvarError, match="cannot load as a safe checkpoint"):
        load_state_dict(path)
