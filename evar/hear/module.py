"""Any evar encoder as a HEAR 2021 module, for HEAR tooling (heareval, hear-validator, ``evar hear validate``).

::

    import evar.hear.module as hear
    model = hear.load_model("AudioNTT2020-BYOLA-64x96d512.pth", model_name="byola")
    scene = hear.get_scene_embeddings(audio, model)              # (n_sounds, D)
    frames, ms = hear.get_timestamp_embeddings(audio, model)     # (n_sounds, T, D'), (n_sounds, T) in ms

Tools that call ``load_model(path)`` only pick the encoder from ``$EVAR_HEAR_MODEL`` (default
``byola``); heareval passes ``model_name`` etc. with ``--model-options``. Encoders that normalise with
task statistics (BYOL-A) get them from ``norm_stats``: ``[mean, std]``, or ``"clip"`` (the default)
for each clip's own log-mel mean and standard deviation. The HEAR API has no access to a task's
training audio, so EVAR's rule (training-set statistics) cannot be followed here.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from evar.encoders import Encoder, create_encoder
from evar.errors import EvarError

DEFAULT_MODEL = "byola"
MODEL_ENV = "EVAR_HEAR_MODEL"


class HearModel(nn.Module):
    """An evar encoder with the attributes the HEAR API requires."""

    def __init__(self, encoder: Encoder, model_name: str, norm_stats: str | Sequence[float] = "clip") -> None:
        super().__init__()
        self.encoder, self.model_name = encoder, model_name
        self.sample_rate = int(encoder.sample_rate)
        self.scene_embedding_size = int(encoder.embed_dim)
        per_clip = isinstance(norm_stats, str) and norm_stats == "clip"
        self.per_clip_stats = encoder.needs_stats and per_clip
        if not per_clip:
            if not encoder.needs_stats:
                raise EvarError(f"{model_name} takes no normalisation statistics; drop norm_stats")
            if isinstance(norm_stats, str) or len(norm_stats) != 2:
                raise EvarError(f"{model_name}: norm_stats must be 'clip' or [mean, std], got {norm_stats!r}")
            encoder.set_stats(float(norm_stats[0]), float(norm_stats[1]))
        try:  # the frame dimension, from one second of silence
            frames, _ = self._frames(torch.zeros(1, self.sample_rate))
        except ValueError as exc:  # e.g. fused layers with different frame rates
            raise EvarError(f"{model_name}: no timestamp embeddings ({exc})") from exc
        self.timestamp_embedding_size = int(frames.shape[-1])

    @torch.no_grad()
    def _per_clip(self, audio: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> list:
        """Run ``fn`` on each clip with statistics of that clip's own front-end output."""
        outputs = []
        for clip in torch.as_tensor(audio).to(self.encoder.device, torch.float32):
            clip = clip.unsqueeze(0)
            feats = self.encoder.features(clip)
            std = max(float(feats.std(unbiased=False)), torch.finfo(torch.float32).eps)
            self.encoder.set_stats(float(feats.mean()), std)
            outputs.append(fn(clip))
        return outputs

    def _frames(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.per_clip_stats:
            return self.encoder.embed_frames(audio)
        outputs = self._per_clip(audio, self.encoder.embed_frames)
        return torch.cat([f for f, _ in outputs]), outputs[0][1]

    def scene(self, audio: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(n_sounds, scene_embedding_size)``."""
        if not self.per_clip_stats:
            return self.encoder.embed(audio)
        return torch.cat(self._per_clip(audio, self.encoder.embed))

    def timestamps(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``(n_sounds, T, D)`` and their timestamps ``(n_sounds, T)`` in milliseconds.

        Frames centred after the end of the audio (computed on the encoder's padding, e.g. MSM-MAE's
        160 ms patch columns) are dropped, since HEAR requires timestamps within the audio; one frame
        is always kept.
        """
        frames, seconds = self._frames(audio)
        ms = seconds.to(frames.device, torch.float32) * 1000.0
        n = max(1, int((ms <= 1000.0 * audio.shape[-1] / self.sample_rate).sum()))
        return frames[:, :n], ms[:n].expand(frames.shape[0], -1)


def load_model(model_file_path: str = "", model_name: str | None = None, layers: Sequence[int | str] | None = None,
               norm_stats: str | Sequence[float] = "clip", **encoder_options) -> HearModel:
    """HEAR ``load_model``: the evar encoder ``model_name`` (default ``$EVAR_HEAR_MODEL`` or ``byola``).

    ``model_file_path`` is the checkpoint (empty: the official weights from evar's cache, downloaded
    on first use); ``layers`` selects layers to fuse; ``encoder_options`` go to the encoder's factory.
    """
    name = model_name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    encoder = create_encoder(name, weights=model_file_path or None, layers=layers, **encoder_options)
    return HearModel(encoder, name, norm_stats).eval()


def _check_audio(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    if not isinstance(model, HearModel):
        raise EvarError(f"expected a model from evar.hear.module.load_model, got {type(model).__name__}")
    audio = torch.as_tensor(audio)
    if audio.ndim != 2:
        raise EvarError(f"HEAR audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    return audio


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """HEAR ``get_scene_embeddings``: ``(n_sounds, n_samples)`` at ``model.sample_rate`` -> ``(n_sounds, D)``."""
    return model.scene(_check_audio(audio, model))


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR ``get_timestamp_embeddings``: embeddings ``(n_sounds, T, D)``, timestamps ``(n_sounds, T)`` in ms."""
    return model.timestamps(_check_audio(audio, model))
