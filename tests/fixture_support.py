"""Access to tests/fixtures/: reference files and the scripts that build official-format checkpoints."""

from __future__ import annotations

import functools
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@functools.cache
def fixture_module(name: str) -> ModuleType:
    """Import ``tests/fixtures/<name>.py`` (the fixtures folder is data, not a package)."""
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_like_2019(obj: object, path: str | Path) -> None:
    """``torch.save`` in the legacy (pre-zip) format, numpy arrays named as numpy 1.x pickles them.

    The legacy format is a pickle followed by raw storages; only the pickle (the first bytes) names modules.
    """
    path = Path(path)
    legacy = path.with_name(path.name + ".legacy")
    torch.save(obj, legacy, _use_new_zipfile_serialization=False)
    with open(legacy, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(1 << 20).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
        shutil.copyfileobj(src, dst)
    legacy.unlink()


def load_reference(name: str) -> dict[str, np.ndarray]:
    """``tests/fixtures/<name>`` (.npz) as a dict; each 16-bit PCM input ``pcm_<k>`` is also given as
    float32 ``wav_<k>`` (divided by 32768, which is exact)."""
    with np.load(FIXTURES / name) as data:
        reference = dict(data)
    for key in [k for k in reference if k.startswith("pcm_")]:
        reference[f"wav_{key[4:]}"] = reference[key].astype(np.float32) / 32768
    return reference


def probe_smoke_tree(tmp_path: Path, results: Path, model: str, *options: str, sample_rate: int = 16000,
                     seconds: float = 1.0) -> dict:
    """Prepare a 3-class, 15-clip ESC-50 tree and run ``evar probe --task esc50 --model MODEL OPTIONS`` on it (5
    epochs unless the options say otherwise); the results row it wrote."""
    import pandas as pd

    from evar.cli import main
    from evar.synth.trees import make_esc50_tree

    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1,
                           sample_rate=sample_rate, seconds=seconds)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    epochs = [] if "--max-epochs" in options else ["--max-epochs", "5"]
    assert main(["probe", "--task", "esc50", "--model", model, *epochs, *options]) == 0
    return pd.read_csv(results / "scores.csv").iloc[-1].to_dict()


def clap_with_char_tokenizer(tmp_path: Path) -> Path:
    """The tiny CLAP of the parity fixture plus a character-level RoBERTa tokenizer of its 100-token vocabulary."""
    import json
    import string

    from transformers import RobertaTokenizer

    folder = tmp_path / "clap"
    shutil.copytree(FIXTURES / "clap_tiny", folder)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in [*string.ascii_lowercase, "Ġ", *string.digits, "<mask>"]:
        vocab[char] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    RobertaTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(folder)
    return folder
