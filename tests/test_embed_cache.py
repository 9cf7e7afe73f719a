"""Embedding cache: computed once, reused, invalidated by what changes embeddings, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
import evar.embeddings.cache as embed_module
from evar.embeddings import datasets, inference
from evar.embeddings import stats as stats_pass
from evar.embeddings.cache import cache_folder, embed_task
from evar.encoders.melspec import MelSpecEncoder
from evar.errors import AudioError, EvarError
from evar.synth.trees import make_esc50_tree
from evar.options import RunOptions


class CountingMelSpec(MelSpecEncoder):
    """melspec that counts clips it embeds and can fail after a number of batches (an interruption)."""

    def __init__(self, fail_after_batches: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clips, self.batches, self.fail_after_batches = 0, 0, fail_after_batches

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise KeyboardInterrupt
        self.clips += len(wav)
        self.batches += 1
        return super().forward(wav)


@pytest.fixture
def task(tmp_path: Path):
    root = make_esc50_tree(tmp_path / "esc", n_classes=2, clips_per_class_per_fold=2, sample_rate=16000, seconds=0.3)
    return evar.prepare_task("esc50", root)


def test_second_run_reuses_cache(task) -> None:
    first = CountingMelSpec()
    X1 = embed_task(first, task, "melspec", run=RunOptions(batch_size=8, progress=False))
    assert first.clips == len(task) == 20
    second = CountingMelSpec()
    X2 = embed_task(second, task, "melspec", run=RunOptions(batch_size=8, progress=False))
    assert second.clips == 0
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_allclose(X1[:4], second.embed(np.stack([
        np.pad(evar.audio.load_audio(p, 16000), (0, 80000 - 4800)) for p in task.paths()[:4]])).numpy(), rtol=1e-5, atol=1e-5)


def test_changes_invalidate(task) -> None:
    base, _ = cache_folder(MelSpecEncoder(), task, "melspec", 5.0, 42)
    assert cache_folder(MelSpecEncoder(n_mels=32), task, "melspec", 5.0, 42)[0] != base
    assert cache_folder(MelSpecEncoder(), task, "melspec", 4.0, 42)[0] != base
    assert cache_folder(MelSpecEncoder(), task, "melspec", 5.0, 43)[0] != base
    embed_task(MelSpecEncoder(), task, "melspec", run=RunOptions(progress=False))
    path = task.paths()[0]
    evar.audio.write_audio(path, np.zeros(1000, dtype=np.float32), 16000)  # the file changed
    assert cache_folder(MelSpecEncoder(), task, "melspec", 5.0, 42)[0] != base
    again = CountingMelSpec()
    embed_task(again, task, "melspec", run=RunOptions(progress=False))
    assert again.clips == len(task)


def test_interrupted_run_resumes(task, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_module, "CHUNK_ROWS", 6)
    reference = np.array(embed_task(MelSpecEncoder(), task, "reference", run=RunOptions(batch_size=3, progress=False)))
    interrupted = CountingMelSpec(fail_after_batches=5)  # chunk 0 (2 batches) and 1 finish, chunk 2 breaks
    with pytest.raises(KeyboardInterrupt):
        embed_task(interrupted, task, "melspec", run=RunOptions(batch_size=3, progress=False))
    folder, _ = cache_folder(interrupted, task, "melspec", 5.0, 42)
    assert sorted(p.name for p in (folder / "parts").iterdir()) == ["part-00000.npy", "part-00001.npy"]
    assert not (folder / "embeddings.npy").exists()
    resumed = CountingMelSpec()
    X = embed_task(resumed, task, "melspec", run=RunOptions(batch_size=3, progress=False))
    assert resumed.clips == len(task) - 12
    np.testing.assert_array_equal(X, reference)
    assert not (folder / "parts").exists()


def test_bad_audio_fails_or_is_skipped(task) -> None:
    task.paths()[3].write_bytes(b"broken after prepare")
    with pytest.raises(AudioError, match=task.paths()[3].name):
        embed_task(MelSpecEncoder(), task, "melspec", run=RunOptions(progress=False))
    X = embed_task(MelSpecEncoder(), task, "melspec2", run=RunOptions(on_error="skip", progress=False))
    assert np.isnan(X[3]).all() and np.isfinite(np.delete(np.asarray(X), 3, axis=0)).all()
    folder, _ = cache_folder(MelSpecEncoder(), task, "melspec2", 5.0, 42)
    assert list(json.loads((folder / "manifest.json").read_text())["skipped"]) == [task.meta["file"][3]]


def test_normalisation_stats_are_measured_once_and_restored(task, byola512_weights: Path) -> None:
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    X = embed_task(encoder, task, "byola", run=RunOptions(progress=False))
    folder, _ = cache_folder(encoder, task, "byola", 5.0, 42)
    stats = json.loads((folder / "manifest.json").read_text())["stats"]
    assert stats[1] > 0 and torch.allclose(encoder.stats, torch.tensor(stats))
    fresh = evar.load_encoder("byola", weights=str(byola512_weights))
    np.testing.assert_array_equal(embed_task(fresh, task, "byola", run=RunOptions(progress=False)), X)
    assert torch.allclose(fresh.stats, torch.tensor(stats))


def test_random_crops_follow_the_relative_file_name(tmp_path: Path) -> None:
    """Same-named clips in different folders get their own crop; moving the dataset keeps every crop."""
    ramp = np.linspace(-1, 1, 16000, dtype=np.float32)
    for root in ("one", "two"):
        for folder in ("a", "b"):
            evar.audio.write_audio(tmp_path / root / folder / "x.wav", ramp, 16000)

    def crops(root: str) -> list[np.ndarray]:
        paths = [tmp_path / root / "a" / "x.wav", tmp_path / root / "b" / "x.wav"]
        dataset = datasets.ClipDataset(paths, 16000, 4000, np.ones(2, dtype=bool), seed=42,
                                           keys=["a/x.wav", "b/x.wav"])
        return [dataset[i][1].numpy() for i in range(2)]

    first, moved = crops("one"), crops("two")
    assert not np.array_equal(first[0], first[1])
    for a, b in zip(first, moved):
        np.testing.assert_array_equal(a, b)


def test_shards_merge_into_the_unsharded_embeddings(task, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embed_module, "CHUNK_ROWS", 3)  # 20 clips -> 7 chunks over 3 shards
    reference = np.array(embed_task(MelSpecEncoder(), task, "melspec", run=RunOptions(batch_size=2, progress=False), root=tmp_path / "whole"))
    counts = []
    for index in (2, 0, 1):  # any order; the last shard to finish assembles
        encoder = CountingMelSpec()
        X = embed_task(encoder, task, "melspec", run=RunOptions(batch_size=2, progress=False), root=tmp_path / "sharded", shard=(index, 3))
        counts.append(encoder.clips)
        assert (X is None) == (index != 1)
    assert counts == [6, 8, 6]  # chunks {2,5}, {0,3,6 (2 clips)}, {1,4}: each clip embedded once
    np.testing.assert_array_equal(X, reference)
    again = CountingMelSpec()
    np.testing.assert_array_equal(embed_task(again, task, "melspec", run=RunOptions(progress=False), root=tmp_path / "sharded"), X)
    assert again.clips == 0


def test_shard_argument_is_checked() -> None:
    assert embed_module.parse_shard("3/16") == (3, 16)
    for bad in ("16/16", "3", "a/b", "-1/4"):
        with pytest.raises(evar.errors.EvarError, match="shard"):
            embed_module.parse_shard(bad)


def test_float16_storage_halves_the_cache(task, tmp_path: Path) -> None:
    full = embed_task(MelSpecEncoder(), task, "melspec", run=RunOptions(progress=False))
    half = embed_task(MelSpecEncoder(), task, "melspec", run=RunOptions(progress=False, dtype="float16"))
    assert full.dtype == np.float32 and half.dtype == np.float16
    np.testing.assert_allclose(half, full, rtol=1e-3, atol=1e-3)
    assert cache_folder(MelSpecEncoder(), task, "melspec", 5.0, 42, dtype="float16")[0] != \
        cache_folder(MelSpecEncoder(), task, "melspec", 5.0, 42)[0]


def test_stats_pass_audio_is_reused_and_matches_two_passes(task, byola512_weights: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Training clips are decoded once: the statistics pass keeps them for the embedding pass, and the
    statistics and embeddings equal those of a separate statistics pass (EVAR's two passes)."""
    decoded: list[str] = []
    load = datasets.load_audio
    monkeypatch.setattr(datasets, "load_audio", lambda path, sr: decoded.append(Path(path).name) or load(path, sr))
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    X = np.array(embed_task(encoder, task, "byola", run=RunOptions(progress=False)))
    assert sorted(decoded) == sorted(p.name for p in task.paths())  # each clip once
    assert not list(cache_folder(encoder, task, "byola", 5.0, 42)[0].glob("stats-audio-*"))

    two_pass = evar.load_encoder("byola", weights=str(byola512_weights))
    stats = stats_pass.measure_stats(two_pass, task, 5.0)
    assert stats == tuple(json.loads((cache_folder(encoder, task, "byola", 5.0, 42)[0] / "manifest.json")
                                     .read_text())["stats"])
    two_pass.set_stats(*stats)
    dataset = datasets.ClipDataset(task.paths(), 16000, 80000, task.random_crop_rows(), 42,
                                       keys=list(task.meta["file"]))
    plain = np.concatenate([two_pass.embed(wav).numpy() for _, wav, _, _ in datasets.ordered_loader(dataset, 8, 0)])
    # the cached run uses the Conv+BN-folded, channels-last copy: equal up to float rounding
    np.testing.assert_allclose(X, plain, rtol=1e-4, atol=1e-4 * float(np.abs(plain).max()))


def test_inference_copy_folds_batchnorm_and_keeps_layers(byola512_weights: Path) -> None:
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    encoder.set_stats(-5.0, 4.0)
    fast = inference.optimised_for_inference(encoder)
    assert fast is not encoder and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())  # the original is untouched
    wav = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    expected = encoder.embed(wav)
    np.testing.assert_allclose(fast.embed(wav), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    fused = evar.encoders.LayerFusion(encoder, [0, 3])
    np.testing.assert_allclose(inference.optimised_for_inference(fused).embed(wav), fused.embed(wav),
                               rtol=1e-4, atol=1e-3)
    melspec = MelSpecEncoder()
    assert inference.optimised_for_inference(melspec) is melspec  # nothing to fold: used as it is


def test_stats_measured_in_pieces_equal_whole_batches(task, byola512_weights: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """EVAR's batch statistics (its second-batch quirk included) do not depend on the piece size."""
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    monkeypatch.setattr(stats_pass, "STATS_PIECE", 5)  # 16 training clips: batches of 8 = pieces 5 + 3
    pieces = stats_pass.measure_stats(encoder, task, 5.0, batch_size=8)
    monkeypatch.setattr(stats_pass, "STATS_PIECE", 8)
    whole = stats_pass.measure_stats(encoder, task, 5.0, batch_size=8)
    assert pieces == pytest.approx(whole, rel=1e-6)
    single = stats_pass.measure_stats(encoder, task, 5.0, batch_size=16)  # one batch differs from two
    assert single != pytest.approx(whole, rel=1e-6)


def test_inference_copy_folds_cnn14s_declared_pairs_and_keeps_bn0(tmp_path: Path) -> None:
    from encoder_checkpoints import write_checkpoint

    weights, options = write_checkpoint("cnn14", tmp_path)
    encoder = evar.create_encoder("cnn14", weights=str(weights), **options)
    fast = inference.optimised_for_inference(encoder)
    kept = [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert fast is not encoder and len(kept) == 1 and kept[0] is fast.net.bn0  # bn0 normalises mel bins: kept
    wav = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    expected = encoder.embed(wav)
    np.testing.assert_allclose(fast.embed(wav), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_autocast_embeddings_are_cached_apart_and_close_to_float32(task, byola512_weights: Path) -> None:
    """--autocast bfloat16 (the GPU path, run here on CPU): its own cache entry, within bfloat16 of float32."""
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    plain = embed_task(encoder, task, "byola", RunOptions(progress=False))
    half = embed_task(encoder, task, "byola", RunOptions(progress=False, autocast="bfloat16"))
    assert not np.array_equal(plain, half)  # computed again, in bfloat16
    np.testing.assert_allclose(half, plain, rtol=0.05, atol=0.05 * float(np.abs(plain).max()))
    first, _ = cache_folder(encoder, task, "byola", task.spec.unit_sec, 42)
    second, material = cache_folder(encoder, task, "byola", task.spec.unit_sec, 42, autocast="bfloat16")
    assert first != second and material["autocast"] == "bfloat16" and (second / "manifest.json").is_file()
    with pytest.raises(EvarError, match="autocast must be one of"):
        RunOptions(autocast="int8")


def test_kept_clips_are_reused_only_under_the_same_crop_rule(tmp_path: Path) -> None:
    """A clip the statistics pass kept at a random offset is not the test pass's clip (which starts at 0),
    unless the clip is no longer than the unit (then every rule gives it)."""
    long, short = np.linspace(-1, 1, 16000, dtype=np.float32), np.linspace(-1, 1, 3000, dtype=np.float32)
    evar.audio.write_audio(tmp_path / "long.wav", long, 16000)
    evar.audio.write_audio(tmp_path / "short.wav", short, 16000)
    paths, keys = [tmp_path / "long.wav", tmp_path / "short.wav"], ["long.wav", "short.wav"]
    store = datasets.AudioStore(tmp_path / "kept.f32", 4000)
    stats_pass = datasets.ClipDataset(paths, 16000, 4000, np.ones(2, dtype=bool), keys=keys, store=store)
    for index, wav, _, whole in (stats_pass[0], stats_pass[1]):
        store.write(keys[index], wav.numpy(), random_crop=True, whole=whole)
    assert store.holds("long.wav", True) and not store.holds("long.wav", False) and store.holds("short.wav", False)
    test_pass = datasets.ClipDataset(paths, 16000, 4000, np.zeros(2, dtype=bool), keys=keys, store=store)
    np.testing.assert_array_equal(test_pass[0][1].numpy(), evar.audio.load_audio(paths[0], 16000)[:4000])
    assert not np.array_equal(stats_pass[0][1].numpy(), test_pass[0][1].numpy())
    np.testing.assert_array_equal(test_pass[1][1].numpy(), stats_pass[1][1].numpy())
    store.remove()
