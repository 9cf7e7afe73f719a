"""COLA pre-training on a folder of audio: evar's own weights for the ``cola`` and ``cola_byola`` encoders.

As ``cola/contrastive.py`` + ``cola/network.py`` (google-research): each clip is L2-normalised, two random 1-s
segments are cut from it (centred zero padding when shorter), the second with Gaussian noise (std 0.001 on the
normalised waveform); anchors and positives go through the network in one batch; the logits are
``a_i^T W p_j`` between the tanh(layer-norm(dense 512)) projections; the loss is the cross-entropy of each anchor
against its own positive among the batch's positives (the other clips are the negatives); Adam.

Every epoch writes, atomically, the training checkpoint ``<out stem>.train.pt`` (model, optimiser, epoch, loss
history, RNG states, settings) and the encoder weights ``out`` (``.safetensors`` or ``.pt``); a run started again
with ``resume=True`` continues from the checkpoint and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evar.audio import load_audio
from evar.encoders.cola import BACKBONES, SAMPLE_RATE, SEGMENT, ColaModel, contrastive_loss, l2_normalise
from evar.errors import EvarError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})
#: settings a resumed run must share with the checkpoint it continues
RESUME_KEYS = ("backbone", "d", "batch_size", "steps_per_epoch", "lr", "seed", "noise")


@dataclass
class PretrainResult:
    """Where the weights and the checkpoint are, and the mean loss of every epoch so far."""

    weights: Path
    checkpoint: Path
    losses: list[float]


def find_audio(audio_dir: str | Path) -> list[Path]:
    """Every audio file under ``audio_dir`` (recursively), sorted."""
    root = Path(audio_dir).expanduser()
    if not root.is_dir():
        raise EvarError(f"audio folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise EvarError(f"{root}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found")
    return files


def random_segment(wav: torch.Tensor, generator: torch.Generator, length: int = SEGMENT) -> torch.Tensor:
    """A random ``length``-sample crop; shorter clips are zero-padded on both sides first (``extract_window``)."""
    if wav.shape[-1] < length:
        pad = length - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    start = int(torch.randint(wav.shape[-1] - length + 1, (1,), generator=generator))
    return wav[start:start + length]


class SegmentPairs:
    """Anchor/positive segment batches from distinct random clips of a file list."""

    def __init__(self, files: list[Path], noise: float = 0.001) -> None:
        self.files, self.noise = files, noise

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(anchors, positives)``, each ``(batch_size, SEGMENT)``; row i of both comes from the same clip."""
        anchors, positives = [], []
        for index in torch.randperm(len(self.files), generator=generator)[:batch_size].tolist():
            wav = l2_normalise(torch.from_numpy(load_audio(self.files[index], SAMPLE_RATE)))
            anchors.append(random_segment(wav, generator))
            positive = random_segment(wav, generator)
            positives.append(positive + self.noise * torch.randn(positive.shape, generator=generator))
        return torch.stack(anchors), torch.stack(positives)


def checkpoint_path(out: str | Path) -> Path:
    """The training checkpoint beside the weights file: ``cola.safetensors`` -> ``cola.train.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".train.pt")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_encoder_weights(model: ColaModel, out: Path, settings: dict[str, Any]) -> None:
    """Write the backbone's ``backbone.*`` tensors (what ``--weights`` takes), atomically."""
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"format": "evar-cola", "settings": json.dumps(settings, sort_keys=True)}
        _atomic(out, lambda tmp: save_file(state, tmp, metadata=metadata))
    else:
        _atomic(out, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvarError(f"{path}: cannot read the COLA training checkpoint ({exc}); remove it to start again") from exc


@dataclass(frozen=True)
class ColaSettings:
    """COLA pre-training settings: the backbone (``efficientnet_b0`` or ``byola`` of width ``d``), epochs, batch
    size (the clips of a batch are each other's negatives), steps per epoch (None: one pass over the files),
    Adam's learning rate, the seed, and the Gaussian noise added to the positives."""

    backbone: str = "efficientnet_b0"
    epochs: int = 100
    batch_size: int = 64
    steps_per_epoch: int | None = None
    lr: float = 1e-4
    seed: int = 42
    d: int = 512
    noise: float = 0.001


def pretrain_cola(audio_dir: str | Path, out: str | Path, settings: ColaSettings = ColaSettings(), resume: bool = True,
                  device: str = "cpu", progress: bool = True) -> PretrainResult:
    """Pre-train COLA on the audio under ``audio_dir``; the encoder weights go to ``out``.

    ``steps_per_epoch`` defaults to one pass over the files (``len(files) // batch_size``). With ``resume``, an
    existing checkpoint beside ``out`` is continued (its settings must match); without it, an existing
    checkpoint is an error rather than being overwritten. ``d`` is the width of the ``byola`` backbone.
    """
    from tqdm import tqdm

    backbone, epochs, batch_size, steps_per_epoch, lr, seed, d, noise = (
        settings.backbone, settings.epochs, settings.batch_size, settings.steps_per_epoch, settings.lr, settings.seed,
        settings.d, settings.noise)
    if backbone not in BACKBONES:
        raise EvarError(f"unknown COLA backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    if epochs < 1 or batch_size < 2 or (steps_per_epoch is not None and steps_per_epoch < 1):
        raise EvarError("COLA pre-training needs epochs >= 1, batch_size >= 2 and steps_per_epoch >= 1")
    out = Path(out).expanduser()
    if out.suffix not in (".safetensors", ".pt", ".pth"):
        raise EvarError(f"{out}: the weights file must end in .safetensors, .pt or .pth")
    files = find_audio(audio_dir)
    if len(files) < batch_size:
        raise EvarError(f"{audio_dir}: {len(files)} audio files, fewer than batch_size={batch_size} "
                        "(each batch needs distinct clips as negatives); lower --batch-size")
    recorded = {"backbone": backbone, "d": d, "batch_size": batch_size, "lr": lr, "seed": seed, "noise": noise,
                "steps_per_epoch": steps_per_epoch or max(1, len(files) // batch_size)}

    torch.manual_seed(seed)
    model = ColaModel(backbone, d=d).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data_rng = torch.Generator().manual_seed(seed)
    ckpt, losses, start = checkpoint_path(out), [], 0
    if ckpt.exists():
        if not resume:
            raise EvarError(f"{ckpt} exists: resume it (--resume) or remove it to start again")
        state = _load_checkpoint(ckpt)
        changed = [f"{k}={state['settings'].get(k)!r}->{recorded[k]!r}" for k in RESUME_KEYS
                   if state["settings"].get(k) != recorded[k]]
        if changed:
            raise EvarError(f"{ckpt} was made with other settings ({', '.join(changed)}); use them or remove it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        data_rng.set_state(state["data_rng"])
        if "cuda_rng" in state and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start, losses = state["epoch"], list(state["losses"])

    pairs = SegmentPairs(files, noise)
    for epoch in range(start, epochs):
        model.train()
        total = 0.0
        for _ in tqdm(range(recorded["steps_per_epoch"]), desc=f"COLA epoch {epoch + 1}/{epochs}", disable=not progress):
            anchors, positives = pairs.batch(batch_size, data_rng)
            loss = contrastive_loss(model(anchors.to(device), positives.to(device)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / recorded["steps_per_epoch"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                 "losses": losses, "settings": recorded, "torch_rng": torch.get_rng_state(),
                 "data_rng": data_rng.get_state()}
        if torch.device(device).type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        _atomic(ckpt, lambda tmp: torch.save(state, tmp))
        save_encoder_weights(model, out, {**recorded, "epoch": epoch + 1})
    if not out.exists():  # a finished checkpoint whose weights file was removed
        save_encoder_weights(model, out, {**recorded, "epoch": start})
    return PretrainResult(out, ckpt, losses)
