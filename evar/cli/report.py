"""Commands that report results: leaderboard tables and figures."""

from __future__ import annotations

import argparse

from evar.cli.args import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, add_model_options, model_choice, run_options


def add_leaderboard(sub) -> None:
    p = sub.add_parser("leaderboard", help="model x task table of results/scores.csv (Markdown, LaTeX, CSV, HTML)")
    p.add_argument("--format", choices=["md", "latex", "csv", "html"], default="md",
                   help="md (default), latex (booktabs), csv (numeric) or html (a self-contained page: sortable, filterable, "
                        "published numbers, cost, links to the records, figures)")
    p.add_argument("--out", help="write the table to this file instead of printing it")
    p.add_argument("--protocol", default="linear", help="linear (default), mlp, knn, fewshot, zeroshot, retrieval, finetune or sed")
    p.add_argument("--tasks", help="comma-separated tasks, in column order (default: every task with results)")
    p.add_argument("--models", help="comma-separated models or labels, in row order, e.g. byola,cnn14+2,5")
    p.add_argument("--groups", action="store_true",
                   help="add SER / NOSS / Music average columns (tables; the html page filters groups itself)")
    p.add_argument("--compare-published", action="store_true",
                   help="beside each cell, the number the original paper reports (evar/published.csv; the html page "
                        "always shows it)")
    p.add_argument("--published-source", help="prefer published rows whose source contains this text")
    p.add_argument("--all-runs", action="store_true", help="list every run, not only the latest of each")
    p.add_argument("--digits", type=NON_NEGATIVE_INT, default=1, help="decimals of the percentages (default 1)")
    p.add_argument("--average", choices=["plain", "weighted"], default="plain",
                   help="plain mean over tasks (EVAR, default) or weighted by test clips (X-ARES; tasks prepared)")
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from evar.results.leaderboard import leaderboard_text, parse_names, write_leaderboard

    options = dict(fmt=args.format, protocol=args.protocol, tasks=parse_names(args.tasks),
                   models=parse_names(args.models), groups=args.groups, compare_published=args.compare_published,
                   published_source=args.published_source, all_runs=args.all_runs, digits=args.digits,
                   average=args.average)
    if args.out:
        print(f"wrote {write_leaderboard(args.out, **options)}")
    else:
        print(leaderboard_text(**options), end="")


def add_results(sub) -> None:
    p = sub.add_parser("results", help="run records: validate, export, import")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("validate", help="check every record of a results folder; exit 1 on a problem")
    q.add_argument("path", nargs="?", help="results folder or its records/ (default: the results folder)")
    q.add_argument("--strict", action="store_true", help="non-standard protocol settings count as problems too")
    q = actions.add_parser("export", help="write the latest record of each model x task x protocol into DIR")
    q.add_argument("dir")
    q = actions.add_parser("import", help="merge a folder of someone else's records (new runs only)")
    q.add_argument("dir")
    p.set_defaults(handler=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    from evar.paths import results_dir
    from evar.results.records import export_records, import_records, validate

    if args.action == "export":
        print(f"wrote {len(export_records(args.dir))} record(s) to {args.dir}")
        return 0
    if args.action == "import":
        imported, skipped = import_records(args.dir)
        print(f"imported {imported} run(s) from {args.dir}; {skipped} already here")
        return 0
    problems, notes = validate(args.path or results_dir())
    for line in problems:
        print(f"problem: {line}")
    for line in notes:
        print(f"note: {line}")
    failed = problems or (args.strict and notes)
    print("records: " + (f"{len(problems)} problem(s), {len(notes)} non-standard setting(s)" if failed or notes
                         else "all consistent"))
    return 1 if failed else 0


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures as PNG: layer-wise curve, confusion matrix, t-SNE, leaderboard bars")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    q = kinds.add_parser("layers", help="probe score per layer (runs of probe --layers all)")
    q.add_argument("--model", required=True)
    q.add_argument("--task", required=True)
    q.add_argument("--protocol", default="linear")
    q.add_argument("--out", help="PNG path (default: results/plots/layers-MODEL-TASK.png)")
    q = kinds.add_parser("confusion", help="confusion matrix and class-wise accuracy of the latest probe run")
    q.add_argument("--model", required=True)
    q.add_argument("--task", required=True)
    q.add_argument("--protocol", default="linear", help="linear (default), mlp, knn, fewshot or zeroshot")
    q.add_argument("--counts", action="store_true", help="clip counts instead of each true class's fractions")
    q.add_argument("--out", help="PNG path (default: results/plots/confusion-MODEL-TASK-PROTOCOL.png)")
    q = kinds.add_parser("layer-weights", help="layer weights learnt by a probe --layers weighted run")
    q.add_argument("--model", required=True)
    q.add_argument("--task", required=True)
    q.add_argument("--protocol", default="linear", help="linear (default) or mlp")
    q.add_argument("--out", help="PNG path (default: results/plots/layer-weights-MODEL-TASK-PROTOCOL.png)")
    q = kinds.add_parser("tsne", help="t-SNE of a task's cached embeddings, coloured by class")
    add_model_options(q)
    q.add_argument("--task", required=True)
    q.add_argument("--fold", type=int, help="cross-validation tasks: only this fold's clips")
    q.add_argument("--split", choices=["train", "valid", "test"], help="fixed-split tasks: only this split")
    q.add_argument("--max-points", type=POSITIVE_INT, default=5000, help="random subset above this many clips")
    q.add_argument("--perplexity", type=POSITIVE_FLOAT, default=30.0)
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--out", help="PNG path (default: results/plots/tsne-MODEL-TASK[-foldK].png)")
    q = kinds.add_parser("bars", help="grouped bar chart of the leaderboard")
    q.add_argument("--protocol", default="linear")
    q.add_argument("--tasks", help="comma-separated tasks")
    q.add_argument("--models", help="comma-separated models or labels")
    q.add_argument("--out", help="PNG path (default: results/plots/bars-PROTOCOL.png)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> None:
    from evar.results import plots
    from evar.results.leaderboard import parse_names

    if args.kind == "layers":
        path = plots.plot_layers(args.model, args.task, protocol=args.protocol, out=args.out)
    elif args.kind == "confusion":
        path = plots.plot_confusion(args.model, args.task, protocol=args.protocol, normalise=not args.counts,
                                    out=args.out)
    elif args.kind == "layer-weights":
        path = plots.plot_layer_weights(args.model, args.task, protocol=args.protocol, out=args.out)
    elif args.kind == "tsne":
        path = plots.plot_tsne(model_choice(args), args.task, fold=args.fold, split=args.split, run=run_options(args),
                               max_points=args.max_points, seed=args.seed, perplexity=args.perplexity, out=args.out)
    else:
        path = plots.plot_bars(protocol=args.protocol, tasks=parse_names(args.tasks), models=parse_names(args.models),
                               out=args.out)
    print(f"wrote {path}")


COMMANDS = (("leaderboard", add_leaderboard), ("plot", add_plot), ("results", add_results),)
