"""Errors that evar reports to the user as one clear line."""

from __future__ import annotations

import difflib
from typing import Iterable


class EvarError(Exception):
    """A mistake the user can fix: unknown name, missing file, bad audio, wrong layout."""


class AudioError(EvarError):
    """An audio file that cannot be used (unreadable, empty, NaN/inf)."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> EvarError:
    """``unknown model 'byol' (did you mean 'byola'?); known models: ...``"""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return EvarError(f"unknown {kind} {name!r}{hint}; known {kind}s: {', '.join(known)}")
