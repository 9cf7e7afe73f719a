"""Commands that evaluate an encoder: embed, probe, finetune."""

from __future__ import annotations

import argparse
import glob

from evar.cli.args import (
    NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, add_model_options, device_name, mean_std,
    model_choice, run_options, seed_list, size_list,
)
from evar.errors import EvarError


def add_embed(sub) -> None:
    p = sub.add_parser("embed", help="compute (and cache) embeddings of a task or of audio files")
    add_model_options(p)
    p.add_argument("files", nargs="*", help="audio files (globs allowed) instead of --task")
    p.add_argument("--task", help="a prepared task")
    p.add_argument("--out", help="with files: write the embeddings to this .npy")
    p.add_argument("--unit-sec", type=POSITIVE_FLOAT, help="with files: crop/pad every clip to this duration")
    p.add_argument("--stats", type=mean_std, help="with files: normalisation MEAN,STD for encoders that need "
                   "dataset statistics (BYOL-A, AST, MSM-MAE); default: measured on the given files")
    p.add_argument("--shard", help="with --task: compute shard I/N only (I from 0, e.g. $SLURM_ARRAY_TASK_ID/16); "
                   "the last shard to finish assembles the embeddings")
    p.set_defaults(handler=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> None:
    from evar.api import embed, embed_files_to

    if bool(args.task) == bool(args.files):
        raise EvarError("give either --task TASK or audio files")
    if args.files:
        if not args.out:
            raise EvarError("--out PATH.npy is required when embedding files")
        files = [f for pattern in args.files for f in (sorted(glob.glob(pattern)) or [pattern])]  # order kept
        emb, listing = embed_files_to(args.out, model_choice(args), files, run_options(args), args.unit_sec, args.stats)
        print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} (files in {listing})")
        return
    emb = embed(model_choice(args), task=args.task, run=run_options(args), shard=args.shard)
    if emb is not None:  # None: a shard whose siblings are still running (embed_task said how many chunks are left)
        print(f"embeddings of {args.task}: {emb.shape[0]} x {emb.shape[1]} (cached)")


def add_probe(sub) -> None:
    p = sub.add_parser("probe", help="evaluate frozen embeddings (linear: EVAR protocol; mlp, knn, fewshot, "
                       "zeroshot, retrieval); appends to results/scores.csv")
    add_model_options(p)
    p.add_argument("--task", required=True)
    p.add_argument("--protocol", choices=["linear", "mlp", "knn", "fewshot", "zeroshot", "retrieval"],
                   help="clip-level tasks: linear (default; EVAR), mlp (EVAR's --hidden), knn (X-ARES), fewshot (MTEB), "
                        "zeroshot (EVAR's captions through a text tower: clap); caption tasks (clotho, audiocaps): "
                        "retrieval (EVAR's audio<->text R@k, mAP@10)")
    p.add_argument("--seeds", type=seed_list, help="comma-separated seeds (default 42); EVAR's papers average 42,43,44")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="default 3e-4 (evar.options.ProbeSettings)")
    p.add_argument("--max-epochs", type=POSITIVE_INT, help="default 200")
    p.add_argument("--patience", type=NON_NEGATIVE_INT, help="default 20")
    p.add_argument("--linear-mode", choices=["evar", "clean"],
                   help="evar (default): EVAR's classifier and random stream, seed for seed (its two-pass runner); "
                        "clean: each fold and seed seeded on its own, scaler on the training part, argmax of logits")
    g = p.add_argument_group("mlp")
    g.add_argument("--hidden", type=size_list, help="hidden layer sizes, e.g. 512 or 1024,1024 (default 512)")
    g.add_argument("--dropout", type=NON_NEGATIVE_FLOAT, help="after each hidden layer (default 0.5, EVAR's)")
    g.add_argument("--grid", action="store_true", default=None,
                   help="pick 1 or 2 hidden layers x lr 1e-3/3e-4/1e-4 on validation per fold and seed")
    g = p.add_argument_group("knn")
    g.add_argument("--k", type=POSITIVE_INT, help="neighbours (default 10)")
    g.add_argument("--metric", choices=["cosine", "euclidean"], help="default cosine (temperature-weighted votes)")
    g.add_argument("--temperature", type=POSITIVE_FLOAT, help="cosine vote weight exp(sim/T) (default 0.07)")
    g = p.add_argument_group("fewshot")
    g.add_argument("--shots", type=POSITIVE_INT, help="training clips per class (default 8)")
    g.add_argument("--draws", type=POSITIVE_INT, help="training sets drawn per fold and seed (default 10)")
    g.add_argument("--classifier", choices=["logistic", "centroid"], help="default logistic (L2, C=1)")
    p.add_argument("--template", help="zeroshot: caption template with {} for the class (default '{} can be heard')")
    p.add_argument("--text-batch", type=POSITIVE_INT, help="retrieval: captions per text-tower batch (default 64)")
    p.add_argument("--loss", choices=["bce", "afl", "soft_f1"],
                   help="event (SED) tasks: frame loss (default bce); afl: asymmetric focal loss, soft_f1: soft F-measure")
    p.add_argument("--afl-gamma", type=float, help="event tasks, afl: focus on active frames (default 0)")
    p.add_argument("--afl-zeta", type=float, help="event tasks, afl: focus on inactive frames (default 1)")
    p.set_defaults(handler=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> None:
    from evar.api import probe, probe_layers, probe_settings, probe_weighted_layers

    settings = probe_settings(args.task, args.protocol, lr=args.lr, max_epochs=args.max_epochs,
                              patience=args.patience, seeds=args.seeds, mode=args.linear_mode, loss=args.loss,
                              afl_gamma=args.afl_gamma, afl_zeta=args.afl_zeta, hidden=args.hidden,
                              dropout=args.dropout, grid=args.grid, k=args.k, metric=args.metric,
                              temperature=args.temperature, shots=args.shots, draws=args.draws,
                              classifier=args.classifier, template=args.template,
                              text_batch=args.text_batch)
    if args.layers == "all":
        for result in probe_layers(args.task, model_choice(args), settings, run_options(args)):
            print(f"{result.label} ({result.settings['layer_name']}) on {result.task}: {result.metric} "
                  f"{100 * result.mean:.2f} ± {100 * result.std:.2f}")
        return
    if args.layers == "weighted":
        result = probe_weighted_layers(args.task, model_choice(args), settings, run_options(args))
        weights = ", ".join(f"{name} {w:.2f}" for name, w in zip(result.settings["layer_names"],
                                                                  result.settings["layer_weights"][0][0]))
        print(f"{result.summary()}; layer weights ({result.rounds[0]}, seed {result.seeds[0]}): {weights}")
        return
    result = probe(args.task, model_choice(args), settings, run_options(args))
    if result.protocol == "sed":
        last = result.settings["sed"][-1]
        print(f"{result.summary()}; segment 1 s F1 {100 * last['segment_1s']['f_measure']:.2f}, "
              f"ER {last['segment_1s']['error_rate']:.3f} ({last['round']}, seed {last['seed']})")
        return
    if result.protocol == "retrieval":
        print(f"{result.model} on {result.task} ({result.settings['test_clips']} clips, "
              f"{result.settings['test_captions']} captions):")
        for direction, scores in result.settings["retrieval"].items():
            print(f"  {direction}: " + ", ".join(f"{k} {v:.2f}" if k.endswith("R") else f"{k} {100 * v:.2f}"
                                                for k, v in scores.items()))
        return
    per_round = ", ".join(f"{name} {100 * sum(s) / len(s):.2f}" for name, s in zip(result.rounds, result.scores))
    print(f"{result.summary()} ({per_round})")


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune an encoder on a task (EVAR protocol); appends to results/scores.csv")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True, help="registered encoder name (see `evar list models`)")
    p.add_argument("--weights", help="local checkpoint file (default: official weights from the cache)")
    p.add_argument("--device", type=device_name, default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=0, help="DataLoader worker processes for audio decoding")
    g = p.add_argument_group("training (unset: the encoder's EVAR defaults, e.g. byola 0.001/256/200/5/0.5/30/100/rrc)")
    g.add_argument("--lr", type=POSITIVE_FLOAT)
    g.add_argument("--epochs", type=POSITIVE_INT)
    g.add_argument("--batch-size", type=POSITIVE_INT)
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE_FLOAT)
    g.add_argument("--optimizer", choices=["sgd", "adamw"], help="default sgd (momentum 0.9, no weight decay)")
    g.add_argument("--mixup", type=NON_NEGATIVE_FLOAT, help="mixup alpha on waveforms; 0 turns it off")
    g.add_argument("--freq-mask", type=NON_NEGATIVE_INT, help="frequency mask width (log-mel bins); 0 turns it off")
    g.add_argument("--time-mask", type=NON_NEGATIVE_INT, help="time mask width (frames); 0 turns it off")
    g.add_argument("--rrc", action=argparse.BooleanOptionalAction, default=None, help="random resize crop")
    g.add_argument("--aug-shared", action="store_true", default=None,
                   help="one mask/crop per batch, as EVAR applies them (default: one per clip)")
    g.add_argument("--loss", choices=["ce", "wce", "bce", "afl", "soft_f1"],
                   help="ce: EVAR's (BCE for multi-label); wce: inverse-frequency weighted ce; afl: asymmetric focal")
    g.add_argument("--afl-gamma", type=float, help="asymmetric focal loss: focus on active targets (default 0)")
    g.add_argument("--afl-zeta", type=float, help="asymmetric focal loss: focus on inactive targets (default 1)")
    g.add_argument("--pos-weight", type=float, help="bce/ce multi-label: weight of active targets (simple re-weighting)")
    g.add_argument("--inverse-frequency", action="store_true", default=None,
                   help="bce/afl: weigh classes by inverse training frequency")
    g.add_argument("--mix-training", action="store_true", default=None,
                   help="first train on two-clip blends with the union of labels (BCE), then on unmixed clips")
    g.add_argument("--mix-epochs", type=float, help="fraction of --epochs in the mixed phase (default 0.5)")
    g.add_argument("--mix-ratio", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="blend weight a ~ U(LOW, HIGH) (default 0.3 0.7)")
    g.add_argument("--freeze", action="store_true", default=None, help="train the head only (encoder frozen, eval mode)")
    g.add_argument("--early-stop", type=NON_NEGATIVE_INT, help="stop N epochs after the best validation epoch (default off)")
    g.add_argument("--cv-protocol", choices=["holdout", "evar"],
                   help="folds without a valid split: holdout (10%% of training validates; test at the best epoch; "
                        "default) or evar (the test fold validates; best test score over epochs, optimistic)")
    g.add_argument("--no-epoch-test", dest="epoch_test", action="store_false", default=None,
                   help="test once with the best weights instead of every epoch")
    g.add_argument("--seed", type=int)
    g.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast (CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue the latest unfinished run with the same settings")
    p.set_defaults(handler=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> None:
    from evar.api import finetune
    from evar.options import ModelChoice
    from evar.protocols.finetune import FineTuneSettings

    overrides = {f: getattr(args, f) for f in FineTuneSettings.__dataclass_fields__ if getattr(args, f, None) is not None}
    result = finetune(args.task, ModelChoice(args.model, args.weights), overrides, run_options(args), resume=args.resume)
    per_round = ", ".join(f"{name} {100 * s[0]:.2f}" for name, s in zip(result.rounds, result.scores))
    print(f"{result.model} fine-tuned on {result.task}: {result.metric} {100 * result.mean:.2f} "
          f"± {100 * result.std:.2f} ({per_round}); run folder {result.settings['run_dir']}")


COMMANDS = (("embed", add_embed), ("probe", add_probe), ("finetune", add_finetune),)
