"""Clotho v2.1 (Drossos et al., ICASSP 2020): 15–30-s clips with five captions each, for audio↔text retrieval.

Official layout (Zenodo record 4783391: the captions CSVs, and the audio 7z archives extracted beside them)::

    clotho_captions_validation.csv, clotho_captions_evaluation.csv    file_name,caption_1,...,caption_5
    validation/<file_name>.wav   evaluation/<file_name>.wav

EVAR (``clotho`` in make_metadata.py, read by ``retr_a2t_t2a.py``): validation → valid, evaluation → test, the five
captions of each clip. Retrieval reads only these two splits (valid for an encoder's calibration, test for the
score), so the development split is not prepared. Unit 30 s (the longest clip; shorter ones are zero-padded to it,
where EVAR feeds each whole clip).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, register_task, require_files

#: evar's split -> the release's name for it (CSV suffix and audio folder)
SPLITS = {"valid": "validation", "test": "evaluation"}
CAPTION_COLUMNS = [f"caption_{i}" for i in range(1, 6)]
DOWNLOAD = DownloadSpec(
    root="clotho",
    manual="download clotho_captions_validation.csv, clotho_captions_evaluation.csv, clotho_audio_validation.7z and "
           "clotho_audio_evaluation.7z from https://zenodo.org/records/4783391 into D, extract the archives there "
           "(7z x; they give validation/ and evaluation/), then: evar prepare clotho --root D",
)


@register_task("clotho", unit_sec=30.0, kind="captions", description="audio-text retrieval (Clotho v2.1)",
               source="https://zenodo.org/records/4783391", title="Clotho", download=DOWNLOAD)
def prepare_clotho(root: Path) -> pd.DataFrame:
    """One row per validation and evaluation clip with its five captions."""
    hint = "point --root at the folder holding the Clotho captions CSVs and the extracted audio folders"
    require_files(root, *(f"clotho_captions_{name}.csv" for name in SPLITS.values()), hint=hint)
    frames = []
    for split, name in SPLITS.items():
        path = root / f"clotho_captions_{name}.csv"
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ["file_name", *CAPTION_COLUMNS] if c not in table.columns]
        if missing:
            raise EvarError(f"{path}: missing column(s) {missing}; expected file_name,{','.join(CAPTION_COLUMNS)}")
        frames.append(pd.DataFrame({"file": name + "/" + table["file_name"], "label": "",
                                    "captions": table[CAPTION_COLUMNS].to_numpy().tolist(), "split": split}))
    return pd.concat(frames, ignore_index=True)
