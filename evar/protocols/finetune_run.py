"""One fine-tuning run: its clips and loaders, the training loop of a round, checkpoints, RNG states for resuming, the curves figure."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evar.audio import crop_offset, crop_or_pad, load_audio
from evar.embeddings.stats import STATS_MAX_CLIPS, front_end_stats
from evar.encoders.base import Encoder
from evar.encoders.weights import load_state_dict
from evar.errors import EvarError
from evar.io import atomic_write, atomic_write_text
from evar.log import log
from evar.metrics.classification import mean_average_precision
from evar.options import RunOptions
from evar.protocols.augment import FeatureAugment, mix_training, mixup, sample_mix_training, sample_mixup
from evar.protocols.finetune_model import FineTuneModel, WarmupCosine, supports_feature_augment
from evar.protocols.linear import seed_everything
from evar.protocols.losses import binary_cross_entropy, inverse_frequency_weights, make_loss
from evar.protocols.splits import HoldoutRule, holdout_rows
from evar.tasks import Split, Task

if TYPE_CHECKING:  # the settings' module imports this one
    from evar.protocols.finetune import FineTuneSettings


class _Clips(Dataset):
    """``(wav, target)`` pairs: clips read at the encoder's rate, cropped to the unit (random start
    derived from ``(seed, key, file)`` when ``random_crop``, else the beginning) or zero-padded."""

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, sample_rate: int, unit_samples: int,
                 random_crop: bool, key: str, seed: int) -> None:
        self.paths, self.targets = list(paths), targets
        self.sample_rate, self.unit_samples, self.random_crop, self.key, self.seed = (
            sample_rate, unit_samples, random_crop, key, seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        wav = load_audio(path, self.sample_rate)
        offset = crop_offset(len(wav), self.unit_samples, self.random_crop, f"{self.key}:{path}", self.seed)
        return torch.from_numpy(crop_or_pad(wav, self.unit_samples, offset)), torch.from_numpy(self.targets[index])


def _batches(n: int, batch_size: int, order: np.ndarray) -> list[list[int]]:
    """Consecutive batches of ``order``; a last batch of one joins the previous (BatchNorm needs 2)."""
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def _loader(dataset: Dataset, batches: list[list[int]], num_workers: int) -> DataLoader:
    # an explicit generator keeps the DataLoader off the global torch RNG (dropout's)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
                                             str(tmp)))


def _rng_states(np_rng: np.random.Generator) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "augment": json.dumps(np_rng.bit_generator.state),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng_states(states: dict[str, Any], np_rng: np.random.Generator) -> None:
    np_rng.bit_generator.state = json.loads(states["augment"])
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def plot_curves(history: list[dict[str, Any]], path: Path, metric: str) -> Path | None:
    """Training loss and valid/test metric per epoch, one line per round, as a PNG (matplotlib Agg)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'evar-bench[plots]'); no curves.png")
        return None
    df = pd.DataFrame(history)
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for name, rows in df.groupby("round", sort=False):
        line, = loss_ax.plot(rows["epoch"], rows["train_loss"], label=name)
        metric_ax.plot(rows["epoch"], rows["valid"], color=line.get_color(), label=f"{name} valid")
        if rows["test"].notna().any():
            metric_ax.plot(rows["epoch"], rows["test"], color=line.get_color(), linestyle="--", label=f"{name} test")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="loss")
    metric_ax.set(xlabel="epoch", ylabel=metric, title=metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


class FineTuneRun:
    """One fine-tuning run: the task, the encoder and its initial weights, settings and folder."""

    def __init__(self, task: Task, encoder: Encoder, settings: FineTuneSettings, options: RunOptions, run_dir: Path,
                 epoch_hook: Callable[[str, int, nn.Module], None] | None) -> None:
        self.task, self.encoder, self.settings = task, encoder, settings
        self.device, self.num_workers, self.progress, self.run_dir, self.epoch_hook = (
            options.device, options.num_workers, options.progress, run_dir, epoch_hook)
        self.initial_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        self.labels = task.labels()
        self.multilabel = task.spec.multilabel
        self.n_classes = len(task.classes)
        self.paths = task.paths()
        self.unit_samples = int(round(task.spec.unit_sec * encoder.sample_rate))
        self.amp = settings.amp and torch.device(self.device).type == "cuda"
        self.augment = FeatureAugment(settings.freq_mask, settings.time_mask, settings.rrc, settings.aug_shared)
        self.feature_augment = self.augment.active and supports_feature_augment(encoder)
        self.history: list[dict[str, Any]] = []

    # -- data ------------------------------------------------------------------------------------
    def targets(self, rows: np.ndarray) -> np.ndarray:
        if self.multilabel:
            return self.labels[rows].astype(np.float32)
        return np.eye(self.n_classes, dtype=np.float32)[self.labels[rows]]

    def clips(self, rows: np.ndarray, random_crop: bool, key: str) -> _Clips:
        return _Clips([self.paths[i] for i in rows], self.targets(rows), self.encoder.sample_rate,
                      self.unit_samples, random_crop, key, self.settings.seed)

    def round_rows(self, split: Split, round_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(train, valid, test, valid_is_test) rows of a round, under the chosen CV protocol."""
        usable = np.ones(len(self.labels), dtype=bool) if self.multilabel else self.labels >= 0
        pick = lambda rows: rows[usable[rows]] if rows is not None else None  # noqa: E731
        train, valid, test = pick(split.train), pick(split.valid), pick(split.test)
        if len(train) < 2 or len(test) == 0:
            raise EvarError(f"{self.task.name} {split.name}: needs >= 2 training and >= 1 test clips")
        if valid is not None and len(valid):
            return train, valid, test, False
        if self.settings.cv_protocol == "evar":
            return train, test, test, True
        rng = np.random.default_rng(self.settings.seed + round_index)
        train, valid = holdout_rows(train, rng, HoldoutRule(self.settings.valid_fraction),
                                    None if self.multilabel else self.labels)
        if len(train) < 2:
            raise EvarError(f"{self.task.name} {split.name}: too few clips to hold out a validation set")
        return train, valid, test, False

    def measure_stats(self, rows: np.ndarray) -> tuple[float, float]:
        """EVAR's normalisation statistics on this round's shuffled, randomly cropped training clips."""
        dataset = self.clips(rows, True, "stats")
        order = np.random.default_rng(self.settings.seed).permutation(len(rows))
        loader = _loader(dataset, _batches(len(rows), self.settings.batch_size, order), self.num_workers)
        return front_end_stats(self.encoder, ([wav] for wav, _ in loader), max_clips=STATS_MAX_CLIPS)

    # -- evaluation ------------------------------------------------------------------------------
    def predict(self, model: FineTuneModel, dataset: _Clips) -> np.ndarray:
        model.eval()
        order = np.arange(len(dataset))
        outputs = []
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            for wav, _ in _loader(dataset, _batches(len(dataset), self.settings.batch_size, order), self.num_workers):
                outputs.append(model(wav.to(self.device)).float().cpu().numpy())
        return np.concatenate(outputs)

    def score(self, logits: np.ndarray, rows: np.ndarray) -> float:
        if self.multilabel:
            return mean_average_precision(self.labels[rows], logits)
        return float((logits.argmax(axis=1) == self.labels[rows]).mean())

    # -- training --------------------------------------------------------------------------------
    def write_log(self, extra: Sequence[dict[str, Any]] = ()) -> None:
        rows = self.history + list(extra)
        if rows:
            atomic_write_text(self.run_dir / "log.csv", pd.DataFrame(rows).to_csv(index=False))

    def train_round(self, round_index: int, split: Split) -> dict[str, Any]:
        """Train one round (resuming from its ``last.pt`` when present); returns its result."""
        s = self.settings
        folder = self.run_dir / split.name
        folder.mkdir(parents=True, exist_ok=True)
        train, valid, test, valid_is_test = self.round_rows(split, round_index)
        seed_everything(s.seed)
        encoder = self.encoder
        encoder.load_state_dict(self.initial_state)
        model = FineTuneModel(encoder, self.n_classes, self.augment if self.feature_augment else None).to(self.device)
        if s.freeze:
            for p in encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        if s.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=0.0)
        else:  # EVAR's AdamW settings
            optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4, betas=(0.9, 0.95), eps=1e-8, amsgrad=True)
        scheduler = WarmupCosine(optimizer, s)
        class_weights = None
        if s.loss == "wce" or s.inverse_frequency:
            class_weights = inverse_frequency_weights(self.labels[train], self.n_classes).to(self.device)
        loss_fn = make_loss(s.loss, self.multilabel, class_weights, s.pos_weight, s.afl_gamma, s.afl_zeta)
        aug_rng = np.random.default_rng([s.seed, round_index])
        state: dict[str, Any] = {"epoch": -1, "best_valid": -math.inf, "best_epoch": -1, "best_test": None,
                                 "stopped": False, "stats": None, "history": []}
        last = folder / "last.pt"
        if last.is_file():
            saved = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _restore_rng_states(saved["rng"], aug_rng)
            state = saved["state"]
            if state["stats"] is not None:
                encoder.set_stats(*state["stats"])
        elif encoder.needs_stats:
            state["stats"] = list(self.measure_stats(train))
            encoder.set_stats(*state["stats"])
        model.fill = state["stats"][0] if state["stats"] is not None else 0.0
        test_data = self.clips(test, False, "test")
        valid_data = test_data if valid_is_test else self.clips(valid, True, "valid")
        iters = len(_batches(len(train), s.batch_size, np.arange(len(train))))
        bar = tqdm(total=s.epochs, initial=state["epoch"] + 1, unit="epoch", disable=not self.progress,
                   desc=f"finetune {self.task.name} {split.name}")
        for epoch in range(state["epoch"] + 1, s.epochs):
            if state["stopped"]:
                break
            mixed = epoch < s.mix_training_epochs
            order = np.random.default_rng([s.seed, round_index, epoch]).permutation(len(train))
            loader = _loader(self.clips(train, True, f"train:{round_index}:{epoch}"),
                             _batches(len(train), s.batch_size, order), self.num_workers)
            model.train()
            if s.freeze:
                encoder.eval()
            total, count, lr = 0.0, 0, optimizer.param_groups[0]["lr"]
            for it, (wav, target) in enumerate(loader):
                wav, target = wav.to(self.device), target.to(self.device)
                if mixed:
                    wav, target = mix_training(wav, target, *sample_mix_training(len(wav), s.mix_ratio, aug_rng))
                elif s.mixup > 0 and not s.mix_training:
                    wav, target = mixup(wav, target, *sample_mixup(len(wav), s.mixup, aug_rng))
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                    logits = model(wav, aug_rng if self.feature_augment else None)
                loss = binary_cross_entropy(logits.float(), target) if mixed else loss_fn(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.set(epoch + it / iters)
                total += float(loss.detach()) * len(wav)
                count += len(wav)
            valid_logits = self.predict(model, valid_data)
            valid_score = self.score(valid_logits, valid)
            test_score = valid_score if valid_is_test else (
                self.score(self.predict(model, test_data), test) if s.epoch_test else None)
            if valid_score > state["best_valid"]:  # EVAR: a strictly better score replaces the best
                state.update(best_valid=valid_score, best_epoch=epoch, best_test=test_score)
                _atomic_safetensors(model.state_dict(), folder / "best.safetensors")
            state["history"].append({"round": split.name, "epoch": epoch, "phase": "mix" if mixed else "train",
                                     "lr": lr, "train_loss": total / max(count, 1), "valid": valid_score,
                                     "test": test_score})
            state["epoch"] = epoch
            if s.early_stop and epoch > state["best_epoch"] + s.early_stop:
                state["stopped"] = True
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": _rng_states(aug_rng), "state": state}, last)
            self.write_log(state["history"])
            bar.update(1)
            bar.set_postfix(valid=f"{valid_score:.4f}", best=f"{state['best_valid']:.4f}")
            if self.epoch_hook is not None:
                self.epoch_hook(split.name, epoch, model)
        bar.close()
        best_test = state["best_test"]
        if best_test is None:  # tests were not run every epoch: test the best weights now
            model.load_state_dict(load_state_dict(folder / "best.safetensors"))
            best_test = self.score(self.predict(model, test_data), test)
        result = {"round": split.name, "score": best_test, "best_epoch": state["best_epoch"],
                  "best_valid": state["best_valid"], "valid_is_test": valid_is_test, "n_train": int(len(train)),
                  "n_valid": int(len(valid)), "n_test": int(len(test)), "stats": state["stats"],
                  "history": state["history"]}
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1))
        last.unlink(missing_ok=True)
        if s.freeze:
            for p in encoder.parameters():
                p.requires_grad_(True)
        return result
