"""LAION-CLAP's audio tower (and text tower) through transformers' ``ClapModel``: ``clap``.

EVAR's ``AR_LAIONCLAP`` (nttcslab/eval-audio-repr 88ba772, ``evar/ar_laionclap.py``, ``config/laionclap.yaml``)
embeds a clip with ``laion_clap.CLAP_Module().get_audio_embedding_from_data(x, use_tensor=True)`` on the
non-fusion HTSAT-tiny checkpoint ``630k-audioset-best.pt``: 48 kHz audio, clips under 10 s repeated then
zero-padded to 10 s ("repeatpad"), the log-mel (64 Slaney mel bins, 50 Hz–14 kHz), HTSAT, the audio projection and
an L2 normalisation. transformers' conversion of that checkpoint (``laion/clap-htsat-unfused``) with
``ClapFeatureExtractor(padding="repeatpad")`` computes the same (within 2e-7 on a converted random checkpoint,
tests/encoders/test_clap.py).

Clips longer than 10 s: laion takes one random 10-s crop (``rand_trunc``, NumPy's global generator); evar instead
embeds every 10-s window (the last one repeat-padded like a short clip) and averages the normalised window
embeddings, so a clip's embedding is deterministic. The windows are the encoder's frames.

``embed_text`` gives the text tower's normalised embeddings (the processor's tokenizer), for zero-shot
classification and retrieval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.hf import first_line, model_location, parse_model_id, source_record
from evar.errors import EvarError

DEFAULT_CHECKPOINT = "laion/clap-htsat-unfused"
WINDOW_SEC = 10.0
#: laion's HTSAT front end (htsat.py): the mel range the feature extractor must use
MEL_RANGE_HZ = (50, 14000)
#: files of a saved tokenizer; a folder without them is audio-only
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return output if torch.is_tensor(output) else output.pooler_output


class ClapEncoder(Encoder):
    """CLAP's audio embedding per 10-s window (frames) and their normalised mean (the clip's embedding)."""

    sample_rate = 48000

    def __init__(self, model: torch.nn.Module, feature_extractor: Any, source: dict[str, Any],
                 tokenizer: Any = None) -> None:
        super().__init__()
        low, high = feature_extractor.frequency_min, feature_extractor.frequency_max
        if (low, high) != MEL_RANGE_HZ:
            raise EvarError(f"clap: the feature extractor's mel range is {low}-{high} Hz, laion's HTSAT uses "
                            f"{MEL_RANGE_HZ[0]}-{MEL_RANGE_HZ[1]} Hz (frequency_min/frequency_max)")
        if int(feature_extractor.sampling_rate) != self.sample_rate:
            raise EvarError(f"clap: expected a 48 kHz feature extractor, got {feature_extractor.sampling_rate}")
        self.model, self.feature_extractor, self.tokenizer = model.eval(), feature_extractor, tokenizer
        self.source = dict(source)
        self.embed_dim = int(model.config.projection_dim)
        self.window = int(WINDOW_SEC * self.sample_rate)
        self.frame_hop_sec = WINDOW_SEC
        self.weights_sha256 = self.source.get("weights_sha256")

    def _window_embeddings(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings of clips of at most 10 s (repeat-padded to 10 s by the feature extractor)."""
        features = self.feature_extractor([c for c in clips.detach().cpu().numpy().astype(np.float32)],
                                          sampling_rate=self.sample_rate, padding="repeatpad",
                                          truncation="rand_trunc", return_tensors="pt")["input_features"]
        return _pooled(self.model.get_audio_features(input_features=features.to(self.device)))

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = range(0, max(wav.shape[1], 1), self.window)
        frames = torch.stack([self._window_embeddings(wav[:, s:s + self.window]) for s in starts], dim=1)
        return frames, self.frame_timestamps(frames.shape[1], wav.shape[1])

    def frame_timestamps(self, n_frames: int, n_samples: int | None = None) -> torch.Tensor:
        """Centre of each window (the last one ends with the clip)."""
        starts = torch.arange(n_frames, dtype=torch.float64) * self.window
        ends = torch.clamp(starts + self.window, max=n_samples) if n_samples else starts + self.window
        return ((starts + ends) / 2 / self.sample_rate).float()

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(frames.mean(dim=1), dim=-1)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings ``(len(texts), dim)`` (for zero-shot prompts and captions)."""
        if self.tokenizer is None:
            raise EvarError("clap: this checkpoint folder has no tokenizer, so texts cannot be embedded")
        tokens = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return self.embed_tokens(tokens["input_ids"], tokens["attention_mask"])

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _pooled(self.model.get_text_features(input_ids=input_ids.to(self.device),
                                                        attention_mask=attention_mask.to(self.device)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "model_type": "clap", "window_sec": WINDOW_SEC, **self.source}


@register_encoder("clap", sample_rate=48000, embed_dim=512, weights_note="hub (network)",
                  description=f"LAION-CLAP HTSAT-tiny audio tower (EVAR's laionclap, 630k-audioset); "
                              f"{DEFAULT_CHECKPOINT} (hub main)")
def build_clap(weights: str | None = None, allow_download: bool = True) -> ClapEncoder:
    """LAION-CLAP through ClapModel: the hub's laion/clap-htsat-unfused, or --weights FOLDER (save_pretrained)."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    if weights is None and not allow_download:
        raise EvarError(f"clap: {DEFAULT_CHECKPOINT} is fetched from the Hugging Face hub; pass --weights FOLDER "
                        "(a save_pretrained folder) on a machine without network access")
    model_id, revision = parse_model_id(weights or DEFAULT_CHECKPOINT)
    where = model_location(model_id)
    kwargs = {"revision": revision} if revision else {}
    try:
        model = ClapModel.from_pretrained(where, **kwargs)
        extractor = ClapFeatureExtractor.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise EvarError(f"clap: cannot load {model_id} ({first_line(exc)}); give --weights FOLDER "
                        "written by ClapModel.save_pretrained with its ClapFeatureExtractor") from exc
    tokenizer = None
    if not Path(where).is_dir() or any((Path(where) / name).exists() for name in TOKENIZER_FILES):
        try:  # (transformers would otherwise make an empty tokenizer from the configuration alone)
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        except (OSError, ValueError, TypeError):  # no usable tokenizer: texts cannot be embedded
            tokenizer = None
    return ClapEncoder(model, extractor, source_record(model_id, revision), tokenizer)
