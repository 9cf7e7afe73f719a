"""Any Hugging Face transformers audio model as an encoder: ``--model hf:<folder or hub id>[@revision]``.

The model and its feature extractor load with transformers' own classes (``AutoConfig``, ``AutoFeatureExtractor``,
``AutoModel``; ``AutoModelForCTC`` for ``output="logits"``; ``WhisperModel``'s encoder for Whisper), from a folder
written by ``save_pretrained`` (works offline) or, with network, from the hub at a pinned revision. The waveform goes
through the model's feature extractor unchanged (per-clip normalisation of raw-waveform models, Whisper's log-mel
and 30-s padding), then, as EVAR's wrappers do (nttcslab/eval-audio-repr 88ba772, ``evar/ar_wav2vec2.py``,
``ar_hubert.py``, ``ar_wavlm.py``, ``ar_data2vec.py``, ``ar_whisper.py``):

- ``output="hidden"`` (default): the hidden states of ``output_layers`` (default the last), concatenated;
- ``output="feature"``: the convolutional feature encoder's output (wav2vec 2.0 family);
- ``output="logits"``: a CTC head's logits;
- Whisper: the encoder only, fed 30-s windows whose frames are cut to the window's audio
  (``ceil(samples / 320)`` frames) and concatenated.

Every hidden state is a named layer (``embed``, ``layer1`` …), so ``--layers`` and layer fusion work. Frames are
timed from the model's stride (the product of its convolution strides; 20 ms for Whisper) at the centre of each
frame's receptive field. Clips of one batch have equal length, so no padding and no attention mask are involved:
each clip's embedding is that of the clip alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evar.encoders import register_encoder, register_prefix
from evar.encoders.base import Encoder, mean_max_pool
from evar.errors import EvarError
from evar.io import file_sha256

OUTPUTS = ("hidden", "feature", "logits")
POOLINGS = ("mean", "mean_max")
#: Whisper's fixed input window and the audio samples per encoder frame (two 10-ms mel frames)
WHISPER_WINDOW_SEC = 30.0
WHISPER_SAMPLES_PER_FRAME = 320
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def parse_model_id(text: str) -> tuple[str, str | None]:
    """``facebook/wav2vec2-base-960h@abc123`` → (id, revision); a folder path has no revision."""
    name, sep, revision = text.rpartition("@")
    return (name, revision) if sep and name and not Path(text).exists() else (text, None)


def weights_digest(folder: Path) -> str | None:
    """sha256 of a model folder's weight files: the file's own for one file, else of their names and digests."""
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []
    if not files:
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def check_options(output: str, pooling: str) -> None:
    if output not in OUTPUTS:
        raise EvarError(f"hf: output must be one of {OUTPUTS}, got {output!r}")
    if pooling not in POOLINGS:
        raise EvarError(f"hf: pooling must be one of {POOLINGS}, got {pooling!r}")


class HFEncoder(Encoder):
    """A transformers audio model and its feature extractor behind evar's encoder interface."""

    def __init__(self, model: torch.nn.Module, feature_extractor: Any, output: str = "hidden",
                 output_layers: tuple[int, ...] = (-1,), pooling: str = "mean", source: dict[str, Any] | None = None
                 ) -> None:
        super().__init__()
        check_options(output, pooling)
        self.model, self.feature_extractor = model.eval(), feature_extractor
        self.output, self.output_layers, self.pooling = output, tuple(int(i) for i in output_layers), pooling
        self.source = dict(source or {})
        config = model.config
        self.is_whisper = config.model_type == "whisper"
        if self.is_whisper and output != "hidden":
            raise EvarError("hf: a Whisper encoder has hidden states only (output='hidden')")
        if output == "logits" and not hasattr(model, "lm_head"):
            raise EvarError("hf: output='logits' needs a model with a CTC head (e.g. Wav2Vec2ForCTC)")
        self.sample_rate = int(feature_extractor.sampling_rate)
        n_layers = config.encoder_layers if self.is_whisper else config.num_hidden_layers
        self.layers = ("embed", *(f"layer{i}" for i in range(1, n_layers + 1)))
        hidden = config.d_model if self.is_whisper else config.hidden_size
        self.embed_dim = {"hidden": hidden * len(self.output_layers),
                          "feature": getattr(config, "conv_dim", [hidden])[-1],
                          "logits": getattr(config, "vocab_size", 0)}[output]
        if self.is_whisper:
            self.hop_samples, self.field_samples = WHISPER_SAMPLES_PER_FRAME, WHISPER_SAMPLES_PER_FRAME
        else:
            self.hop_samples = int(np.prod(config.conv_stride))
            field = 1
            for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
                field = (field - 1) * stride + kernel
            self.field_samples = field
        self.frame_hop_sec = self.hop_samples / self.sample_rate
        self.weights_sha256 = self.source.get("weights_sha256")

    # -- preprocessing -----------------------------------------------------------------------------
    def _inputs(self, wav: torch.Tensor) -> torch.Tensor:
        """The feature extractor's output for a batch of equal-length clips, on the model's device."""
        clips = [clip for clip in wav.detach().cpu().numpy().astype(np.float32)]
        key = "input_features" if self.is_whisper else "input_values"
        values = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")[key]
        return values.to(self.device, torch.float32)

    # -- outputs -----------------------------------------------------------------------------------
    def _hidden_states(self, wav: torch.Tensor) -> list[torch.Tensor]:
        if not self.is_whisper:
            backbone = self.model.base_model if self.output == "logits" else self.model
            return list(backbone(self._inputs(wav), output_hidden_states=True).hidden_states)
        window = int(WHISPER_WINDOW_SEC * self.sample_rate)
        pieces: list[list[torch.Tensor]] = []
        for start in range(0, wav.shape[1], window):
            chunk = wav[:, start:start + window]
            states = self.model.encoder(self._inputs(chunk), output_hidden_states=True).hidden_states
            valid = math.ceil(chunk.shape[1] / WHISPER_SAMPLES_PER_FRAME)
            pieces.append([state[:, :valid] for state in states])
        return [torch.cat(per_layer, dim=1) for per_layer in zip(*pieces)]

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.output == "feature":
            extractor = self.model.feature_extractor if hasattr(self.model, "feature_extractor") else \
                self.model.base_model.feature_extractor
            frames = extractor(self._inputs(wav)).transpose(1, 2)
        elif self.output == "logits":
            frames = self.model(self._inputs(wav)).logits
        else:
            states = self._hidden_states(wav)
            frames = torch.cat([states[i] for i in self.output_layers], dim=-1)
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self._hidden_states(wav)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of frame j's receptive field: ``(j * hop + field / 2) / rate`` seconds."""
        return (torch.arange(n_frames, dtype=torch.float64) * self.hop_samples + self.field_samples / 2).float() \
            / self.sample_rate

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1) if self.pooling == "mean" else mean_max_pool(frames)

    layer_pool = pool  # a fused layer is pooled as the model's own output

    def config(self) -> dict[str, Any]:
        return {**super().config(), "model_type": self.model.config.model_type, "output": self.output,
                "output_layers": list(self.output_layers), "pooling": self.pooling, **self.source}


def model_location(model_id: str) -> str:
    """Where transformers loads ``model_id`` from: the folder, or the hub id (a missing folder fails here)."""
    folder = Path(model_id).expanduser()
    if model_id.startswith(("/", ".", "~")) and not folder.is_dir():  # a path, not a hub id
        raise EvarError(f"hf:{model_id}: no such folder; give a folder written by save_pretrained")
    return str(folder) if folder.is_dir() else model_id


def source_record(model_id: str, revision: str | None) -> dict[str, Any]:
    """What a results row records of a loaded model: id (or resolved folder), revision, weight files' sha256."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        return {"model_id": str(folder.resolve()), "revision": revision or "", "weights_sha256": weights_digest(folder)}
    return {"model_id": model_id, "revision": revision or "", "weights_sha256": _hub_digest(model_id, revision)}


def load_hf(model_id: str, revision: str | None = None, output: str = "hidden"):
    """(model, feature extractor, source) for a folder or a hub id; one clear line when it cannot be found."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC, WhisperModel

    where = model_location(model_id)
    kwargs = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        extractor = AutoFeatureExtractor.from_pretrained(where, **kwargs)
        if config.model_type == "whisper":
            model = WhisperModel.from_pretrained(where, **kwargs)
        else:
            model = (AutoModelForCTC if output == "logits" else AutoModel).from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise EvarError(f"hf:{model_id}{'@' + revision if revision else ''}: cannot load the model "
                        f"({first_line(exc)}); give a folder written by save_pretrained (--model hf:FOLDER, or "
                        "--weights FOLDER with a named encoder), or a hub id on a machine with network access") from exc
    return model, extractor, source_record(model_id, revision)


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _hub_digest(model_id: str, revision: str | None) -> str | None:
    """sha256 of a hub model's weight files, from the local hub cache (None when they are not cached)."""
    try:
        from huggingface_hub import snapshot_download

        return weights_digest(Path(snapshot_download(model_id, revision=revision, local_files_only=True)))
    except Exception:  # no cached snapshot: the row then records the id and revision only
        return None


def build_hf_encoder(arg: str, weights: str | None = None, output: str = "hidden",
                     output_layers: tuple[int, ...] | list[int] = (-1,), pooling: str = "mean") -> HFEncoder:
    """Any transformers audio model: hf:<folder or hub id>[@revision] (--weights: a local folder instead)."""
    check_options(output, pooling)  # before any loading
    model_id, revision = parse_model_id(weights or arg)
    model, extractor, source = load_hf(model_id, revision, output)
    return HFEncoder(model, extractor, output, tuple(output_layers), pooling, source)


register_prefix("hf", build_hf_encoder)


def evar_wav2vec2_extractor():
    """The feature extractor EVAR's HuBERT and WavLM wrappers take from ``facebook/wav2vec2-base-960h`` (their own
    checkpoints' processors fail): per-clip zero mean and unit variance at 16 kHz, no attention mask."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=False)


#: EVAR's named encoders (config/<name>.yaml): hub checkpoint, output, pooling, and whether EVAR swaps in
#: wav2vec2-base-960h's feature extractor; the dimension is the default checkpoint's
HUB_ENCODERS = {
    "wav2vec2": ("facebook/wav2vec2-base-960h", "hidden", "mean", False, 768, "wav2vec 2.0 base-960h, last layer"),
    "wav2vec2_context": ("facebook/wav2vec2-base-960h", "hidden", "mean", False, 768,
                         "wav2vec 2.0 context network (transformer output), EVAR's Wav2Vec2-C"),
    "wav2vec2_feature": ("facebook/wav2vec2-base-960h", "feature", "mean_max", False, 512,
                         "wav2vec 2.0 convolutional feature encoder, EVAR's Wav2Vec2-F"),
    "wav2vec2_logit": ("facebook/wav2vec2-base-960h", "logits", "mean", False, 32, "wav2vec 2.0 CTC logits"),
    "hubert": ("facebook/hubert-base-ls960", "hidden", "mean", True, 768, "HuBERT base (LS-960), last layer"),
    "wavlm": ("microsoft/wavlm-base", "hidden", "mean", True, 768, "WavLM base, last layer"),
    "data2vec": ("facebook/data2vec-audio-large-960h", "hidden", "mean", False, 1024,
                 "data2vec-audio large-960h, last layer"),
    "whisper": ("openai/whisper-large-v3", "hidden", "mean", False, 1280, "Whisper large-v3 encoder, last layer"),
}


def _hub_builder(name: str):
    model_id, output, pooling, evar_extractor, _, _ = HUB_ENCODERS[name]

    def build(weights: str | None = None, output_layers: tuple[int, ...] | list[int] = (-1,),
              allow_download: bool = True) -> HFEncoder:
        if weights is None and not allow_download:
            raise EvarError(f"{name}: {model_id} is fetched from the Hugging Face hub; pass --weights FOLDER "
                            "(a save_pretrained folder) on a machine without network access")
        found_id, revision = parse_model_id(weights or model_id)
        model, extractor, source = load_hf(found_id, revision, output)
        if evar_extractor:
            extractor = evar_wav2vec2_extractor()
        return HFEncoder(model, extractor, output, tuple(output_layers), pooling, source)

    build.__doc__ = f"{HUB_ENCODERS[name][5]} ({model_id} from the hub, or --weights FOLDER)."
    return build


for _name, (_id, _output, _pooling, _swap, _dim, _description) in HUB_ENCODERS.items():
    register_encoder(_name, sample_rate=16000, embed_dim=_dim, description=f"{_description}; {_id} (hub main)",
                     weights_note="hub (network)")(_hub_builder(_name))
