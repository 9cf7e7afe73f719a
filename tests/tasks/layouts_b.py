"""Small trees in the official layouts of VoxCeleb1, VoxForge, CREMA-D, GTZAN and Surge (generated audio).

File names and list formats are the real ones; each clip is ``evar.synth.trees.synth_clip`` of its class index, so
a linear probe can learn the classes. Short clips at 16 kHz keep the tests fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evar.audio import write_audio
from evar.synth.trees import synth_clip
from evar.tasks.cremad import EMOTIONS, speaker_splits
from evar.tasks.gtzan import GENRES, read_split_lists
from evar.tasks.surge import tone_splits

SR = 16000
SPLITS = ("train", "valid", "test")
SPLIT_CODE = {"train": 1, "valid": 2, "test": 3}


def _write(path: Path, class_index: int, rng: np.random.Generator, seconds: float) -> None:
    write_audio(path, synth_clip(class_index, rng, SR, seconds), SR)


def _video_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube id, as VoxCeleb1 names its video folders."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(list(alphabet), 11))


def make_vc1_tree(root: Path, n_speakers: int = 3,
                  splits: tuple[str, ...] = ("train", "train", "train", "valid", "test"), seconds: float = 0.3,
                  seed: int = 0) -> dict[str, str]:
    """``iden_split.txt`` + ``wav/idNNNNN/<video>/<nnnnn>.wav``; each speaker gets one clip per entry of ``splits``.

    Returns ``{file relative to root: split}``.
    """
    rng = np.random.default_rng(seed)
    lines, expected = [], {}
    for s in range(n_speakers):
        speaker = f"id{10001 + s}"
        videos = [_video_id(rng) for _ in range(2)]
        for k, split in enumerate(splits):
            rel = f"{speaker}/{videos[k % 2]}/{k + 1:05d}.wav"
            _write(root / "wav" / rel, s, rng, seconds)
            lines.append(f"{SPLIT_CODE[split]} {rel}")
            expected[f"wav/{rel}"] = split
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return expected


def cremad_speakers(per_split: int = 1) -> dict[str, list[str]]:
    """The first ``per_split`` actors of each split in the shipped table."""
    table = speaker_splits()
    return {split: sorted(s for s, v in table.items() if v == split)[:per_split] for split in SPLITS}


def make_cremad_tree(root: Path, speakers: list[str], emotions: list[str] = EMOTIONS, official: bool = True,
                     seconds: float = 0.3, seed: int = 0) -> list[str]:
    """CREMA-D clips ``<actor>_<sentence>_<emotion>_<level>.wav`` in ``AudioWAV/`` (``official``) or flat.

    Each actor reads two sentences per emotion (DFA at level XX, IEO at level HI). Returns the files written.
    """
    rng = np.random.default_rng(seed)
    base = root / "AudioWAV" if official else root
    written = []
    for speaker in speakers:
        for e, emotion in enumerate(emotions):
            for sentence, level in (("DFA", "XX"), ("IEO", "HI")):
                name = f"{speaker}_{sentence}_{emotion}_{level}.wav"
                _write(base / name, EMOTIONS.index(emotion), rng, seconds)
                written.append(("AudioWAV/" if official else "") + name)
    return written


def gtzan_entries(per_genre_split: int = 1, genres: list[str] = GENRES) -> dict[str, str]:
    """The first ``per_genre_split`` listed excerpts of each genre in each split: ``{entry: split}``."""
    lists = read_split_lists()
    chosen = {}
    for (split, genre), group in lists.assign(genre=lists["entry"].str.split("/").str[0]).groupby(["split", "genre"]):
        if genre in genres:
            chosen.update({entry: split for entry in group["entry"][:per_genre_split]})
    return chosen


def make_gtzan_tree(root: Path, entries: dict[str, str], suffix: str = ".au", in_genres_folder: bool = True,
                    seconds: float = 0.3, seed: int = 0) -> Path:
    """``genres/<genre>/<genre>.000NN.au`` (the archive) for the given list entries; returns the genre base."""
    rng = np.random.default_rng(seed)
    base = root / "genres" if in_genres_folder else root
    for entry in entries:
        genre = entry.split("/")[0]
        _write(base / (entry.rsplit(".", 1)[0] + suffix), GENRES.index(genre), rng, seconds)
    return base


def surge_tones(per_split: int = 1) -> dict[str, str]:
    """The first ``per_split`` tones of each split in the shipped table: ``{tone: split}``."""
    table = tone_splits()
    return {t: split for split in SPLITS for t in sorted(t for t, v in table.items() if v == split)[:per_split]}


def make_surge_tree(root: Path, tones: list[str], midi_notes: tuple[int, ...] = (60, 64, 67), seconds: float = 0.3,
                    seed: int = 0) -> list[str]:
    """``surge/<tone>/note<NNN>.ogg`` for each tone and MIDI note; returns the files written (relative to root)."""
    rng = np.random.default_rng(seed)
    written = []
    for tone in tones:
        for k, note in enumerate(midi_notes):
            rel = f"surge/{tone}/note{note:03d}.ogg"
            _write(root / rel, k, rng, seconds)
            written.append(rel)
    return written


VOXFORGE_LANGUAGES = ["de", "en", "es", "fr", "it", "ru"]


def make_voxforge_tree(root: Path, languages: list[str] = VOXFORGE_LANGUAGES,
                       splits: tuple[str, ...] = ("train", "train", "valid", "test"), utterances: int = 2,
                       seconds: float = 0.3, seed: int = 0) -> bytes:
    """Extracted VoxForge archives ``<user>-<date>-<id>/wav/<utt>.wav`` plus a ``voxforge.csv`` in EVAR's columns.

    One archive per entry of ``splits`` and language. Returns the bytes of the CSV written to ``root``.
    """
    rng = np.random.default_rng(seed)
    rows = ["file_name,label,split"]
    for lang_index, lang in enumerate(languages):
        for a, split in enumerate(splits):
            archive = f"user{lang}{a}-20100710-{'abcdefgh'[a % 8]}{lang}"
            for u in range(utterances):
                rel = f"{archive}/wav/a{u + 1:04d}.wav"
                _write(root / rel, lang_index, rng, seconds)
                rows.append(f"{rel},{lang},{split}")
    data = ("\n".join(rows) + "\n").encode()
    (root / "voxforge.csv").write_bytes(data)
    return data
