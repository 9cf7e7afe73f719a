"""evar: benchmark general-purpose audio representations under EVAR's fixed protocol.

Python API (the ``evar`` command is a thin layer over it)::

    import evar
    encoder = evar.load_encoder("byola", weights="AudioNTT2020-BYOLA-64x96d512.pth")
    emb = encoder.embed(wav)                      # (batch, dim)
    evar.prepare_task("esc50", "/data/ESC-50-master")
    result = evar.probe("esc50", "byola", weights=...)

    from evar.protocols.finetune import finetune  # fine-tuning
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evar-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from evar.errors import AudioError, EvarError  # noqa: E402

#: public names and the module that defines them, imported on first use (``import evar.cli`` stays light:
#: ``evar --help`` does not load torch or pandas)
_LAZY = {
    "embed": "api", "probe": "api", "probe_layers": "api",
    "create_encoder": "encoders", "list_encoders": "encoders", "register_encoder": "encoders",
    "load_encoder": "encoders", "LinearProbe": "protocols.linear",
    "list_tasks": "tasks", "load_task": "tasks", "prepare_task": "tasks", "register_task": "tasks",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'evar' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    value = getattr(module, "create_encoder" if name == "load_encoder" else name)
    globals()[name] = value
    return value


__all__ = [
    "AudioError", "EvarError", "LinearProbe", "__version__", "create_encoder", "embed", "list_encoders",
    "list_tasks", "load_encoder", "load_task", "prepare_task", "probe", "probe_layers", "register_encoder",
    "register_task",
]
