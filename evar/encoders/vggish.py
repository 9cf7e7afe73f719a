"""VGGish (Hershey et al., ICASSP 2017), the torchvggish port of Google's AudioSet model.

Checkpoint: ``vggish-10086976.pth`` from harritaylor/torchvggish (keys ``features.{0,3,6,8,11,13}.*``,
``embeddings.{0,2,4}.*``); the same weights under tcvrick's key names (``fc.{0,2,4}.*``, the
``pytorch_vggish.pth`` that EVAR uses) load too. ``vggish_pca`` adds ``vggish_pca_params-970ea276.pth``
(``pca_eigen_vectors`` 128x128, ``pca_means`` 128, numpy arrays).

Front end (Google's ``vggish_input``/``mel_features``, here in torch): 16 kHz, 400-sample frames
every 160 samples with no padding, periodic Hann, ``|rfft|`` over 512 points (magnitude, not power),
64 HTK mel bands 125-7500 Hz with triangles drawn in mel space, ``log(mel + 0.01)``, then
non-overlapping 96-frame examples (0.96 s). Each example gives one frame of output.

Outputs: ``vggish`` = 128-d after the last ReLU (EVAR, no PCA); ``vggish_pca`` = torchvggish's
postprocessor (PCA with whitening, clipped to [-2, 2], quantised to 0..255); ``vggish_4k`` = the first
4096-d fully connected layer after its ReLU (EVAR's VGGish-4K). Clip embedding: mean + max over examples.

Layers (for EUSIPCO 2022 fusion) are numbered as in composing-general-audio-repr's ``GeneralPurposeVGGish``:
0-15 the modules of ``features`` (conv, ReLU, max-pool), 16-21 the fully connected layers and their
ReLUs. Each layer is max-pooled along time to 6 frames per example (160 ms) and flattened channel-major
(channel x frequency); fully connected outputs are repeated over the 6 frames. The paper's
VGGish-Fusion#10#15 is ``layers=[9, 14]`` (``relu3_2``, ``relu4_2``): 4096 + 4096 = 8192-d.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evar.errors import EvarError
from evar.frontends.logmel import mel_filter_bank
from evar.encoders.numpy_checkpoint import load_state_dict_with_numpy
from evar.encoders.weights import WeightFile, load_weights, resolve_weights
from evar.io import file_sha256
from evar.encoders import register_encoder
from evar.encoders.base import Encoder

TORCHVGGISH_SOURCE = "https://github.com/harritaylor/torchvggish/releases/tag/v0.1"
TORCHVGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/{}"
# No sha256 is published; the names carry torch.hub's sha256 prefixes (10086976..., 970ea276...).
VGGISH_LICENCE = "Apache-2.0 (torchvggish; converted from TensorFlow models' VGGish)"
VGGISH_WEIGHTS = WeightFile("vggish-10086976.pth", TORCHVGGISH_URL.format("vggish-10086976.pth"), None,
                            TORCHVGGISH_SOURCE, VGGISH_LICENCE)
VGGISH_PCA_WEIGHTS = WeightFile("vggish_pca_params-970ea276.pth", TORCHVGGISH_URL.format("vggish_pca_params-970ea276.pth"),
                                None, TORCHVGGISH_SOURCE, VGGISH_LICENCE)

SAMPLE_RATE = 16000
WINDOW, HOP, N_FFT, N_MELS = 400, 160, 512, 64
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames, no overlap
SUBFRAMES = 6  # layer outputs per example (160 ms each)
MIN_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15,760 samples: one whole example
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

LAYER_NAMES = (
    "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3_1", "relu3_1", "conv3_2", "relu3_2", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "pool4", "fc1_1", "relu_fc1_1", "fc1_2", "relu_fc1_2", "fc2",
    "relu_fc2",
)
OUTPUTS = {"embedding": 128, "pca": 128, "fc1": 4096}


class VGGishFrontEnd(nn.Module):
    """Waveforms ``(B, N)`` at 16 kHz -> log-mel examples ``(B, E, 96, 64)`` as Google's ``vggish_input`` computes them.

    Inputs shorter than one example (0.985 s) are zero-padded to one (the original returns no example).
    """

    def __init__(self) -> None:
        super().__init__()
        window = 0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW))  # periodic Hann
        mel = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=125.0,
                              max_frequency=7500.0, sampling_rate=SAMPLE_RATE, norm=None, mel_scale="htk",
                              triangularize_in_mel_space=True)
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)
        self.register_buffer("mel_matrix", torch.tensor(mel, dtype=torch.float32), persistent=False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """``log(mel(|STFT|) + 0.01)`` as ``(B, frames, 64)``; frames = 1 + (N - 400) // 160."""
        if wav.shape[-1] < MIN_SAMPLES:
            wav = F.pad(wav, (0, MIN_SAMPLES - wav.shape[-1]))
        frames = wav.unfold(-1, WINDOW, HOP) * self.window
        magnitude = torch.fft.rfft(frames, n=N_FFT).abs()
        return torch.log(magnitude @ self.mel_matrix + 0.01)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        log_mel = self.log_mel(wav)
        n_examples = log_mel.shape[1] // EXAMPLE_FRAMES
        return log_mel[:, :n_examples * EXAMPLE_FRAMES].reshape(wav.shape[0], n_examples, EXAMPLE_FRAMES, N_MELS)


class VGGishNet(nn.Module):
    """The VGGish network in torchvggish's module layout, on ``(N, 1, 96, 64)`` examples."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU()]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 6 * 4, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                                        nn.Linear(4096, 128), nn.ReLU())

    @staticmethod
    def _flatten(x: torch.Tensor) -> torch.Tensor:
        """TF's NHWC flattening of the last conv map (what the converted fc weights expect)."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor, fc_modules: int = 6) -> torch.Tensor:
        """The first ``fc_modules`` modules of ``embeddings`` after the conv stack (6: 128-d, 2: first fc + ReLU)."""
        return self.embeddings[:fc_modules](self._flatten(self.features(x)))

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer as ``(N, 6, D)``: conv maps max-pooled along time to 6 frames, fc outputs repeated."""
        outputs = []
        for module in self.features:
            x = module(x)
            k = x.shape[2] // SUBFRAMES
            pooled = F.max_pool2d(x, kernel_size=(k, 1)) if k > 1 else x
            outputs.append(pooled.permute(0, 2, 1, 3).reshape(x.shape[0], SUBFRAMES, -1))  # (N, 6, C*F)
        h = self._flatten(x)
        for module in self.embeddings:
            h = module(h)
            outputs.append(h.unsqueeze(1).expand(-1, SUBFRAMES, -1))
        return outputs


def _torchvggish_key(key: str) -> str:
    """tcvrick's port (EVAR's ``pytorch_vggish.pth``) names the fully connected stack ``fc``."""
    key = key.removeprefix("module.")
    return "embeddings." + key[3:] if key.startswith("fc.") else key


class VGGishEncoder(Encoder):
    """VGGish with Google's front end; one output frame per 0.96 s example; mean + max pooling (EVAR)."""

    layers = LAYER_NAMES
    frame_hop_sec = EXAMPLE_FRAMES * HOP / SAMPLE_RATE

    def __init__(self, output: str = "embedding") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise EvarError(f"unknown VGGish output {output!r}; choose from {', '.join(OUTPUTS)}")
        self.output, self.sample_rate, self.embed_dim = output, SAMPLE_RATE, OUTPUTS[output]
        self.frontend = VGGishFrontEnd()
        self.net = VGGishNet()
        self.pca_sha256: str | None = None
        if output == "pca":
            self.register_buffer("pca_eigen_vectors", torch.zeros(128, 128))
            self.register_buffer("pca_means", torch.zeros(128, 1))

    def load_checkpoint(self, path: str | Path) -> None:
        """Load torchvggish's ``vggish-10086976.pth`` (or tcvrick's ``fc.*`` naming), strictly."""
        state = {_torchvggish_key(k): v for k, v in load_state_dict_with_numpy(path).items()}
        self.weights_sha256 = load_weights(self.net, path, "VGGish", state)

    def load_pca(self, path: str | Path) -> None:
        """Load torchvggish's PCA file (``pca_eigen_vectors`` 128x128, ``pca_means`` 128 or 128x1)."""
        if self.output != "pca":
            raise EvarError("PCA parameters apply only to the 'pca' output (vggish_pca)")
        state = load_state_dict_with_numpy(path)
        try:
            vectors = state["pca_eigen_vectors"].reshape(128, 128)
            means = state["pca_means"].reshape(128, 1)
        except (KeyError, RuntimeError) as exc:
            raise EvarError(f"{path}: not a VGGish PCA file (expected pca_eigen_vectors 128x128 and "
                            f"pca_means 128; see {TORCHVGGISH_SOURCE})") from exc
        self.pca_eigen_vectors = vectors.to(self.pca_eigen_vectors)
        self.pca_means = means.to(self.pca_means)
        self.pca_sha256 = file_sha256(path)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel examples ``(B, E, 96, 64)``."""
        return self.frontend(wav)

    def postprocess(self, embeddings: torch.Tensor) -> torch.Tensor:
        """torchvggish's PCA + whitening, clipping to [-2, 2] and 8-bit quantisation (values 0..255)."""
        projected = (embeddings - self.pca_means[:, 0]) @ self.pca_eigen_vectors.T
        clipped = projected.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of example i: its 96 frames span 0.96 i .. 0.96 i + 0.975 s."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec + MIN_SAMPLES / 2 / SAMPLE_RATE

    def layer_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centres of the 160 ms layer frames (six per example) of :meth:`forward_layers`."""
        hop = EXAMPLE_FRAMES // SUBFRAMES * HOP
        span = WINDOW + hop - HOP  # samples covered by 16 STFT frames
        return torch.arange(n_frames, dtype=torch.float32) * hop / SAMPLE_RATE + span / 2 / SAMPLE_RATE

    def _examples(self, wav: torch.Tensor) -> torch.Tensor:
        return self.frontend(wav).reshape(-1, 1, EXAMPLE_FRAMES, N_MELS)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._examples(wav)
        if self.output == "fc1":
            out = self.net(x, fc_modules=2)
        else:
            out = self.net(x)
            if self.output == "pca":
                out = self.postprocess(out)
        frames = out.reshape(wav.shape[0], -1, out.shape[-1])
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Each of the 22 layers as ``(B, 6 E, D)``, frames in time order."""
        return [t.reshape(wav.shape[0], -1, t.shape[-1]) for t in self.net.forward_layers(self._examples(wav))]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "output": self.output, "frontend": "vggish_input (Google, torch port)",
                "weights_sha256": self.weights_sha256, "pca_sha256": self.pca_sha256}


def _builder(output: str, description: str):
    def build(weights: str | None = None, pca_weights: str | None = None, allow_download: bool = True) -> VGGishEncoder:
        if output != "pca" and pca_weights is not None:
            raise EvarError("pca_weights applies only to vggish_pca")
        encoder = VGGishEncoder(output=output)
        if output == "pca":  # the small file first: a wrong one fails fast
            encoder.load_pca(resolve_weights(VGGISH_PCA_WEIGHTS, pca_weights, allow_download=allow_download))
        encoder.load_checkpoint(resolve_weights(VGGISH_WEIGHTS, weights, allow_download=allow_download))
        return encoder

    build.__doc__ = description
    return build


for _name, _output, _description in (
    ("vggish", "embedding", "VGGish (ICASSP 2017) 128-d, no PCA (EVAR)"),
    ("vggish_pca", "pca", "VGGish 128-d with torchvggish's PCA + 8-bit quantisation (AudioSet release format)"),
    ("vggish_4k", "fc1", "VGGish first 4096-d fully connected layer (EVAR's VGGish-4K)"),
):
    register_encoder(_name, sample_rate=SAMPLE_RATE, embed_dim=OUTPUTS[_output], weights=VGGISH_WEIGHTS,
                     description=_description)(_builder(_output, _description))
