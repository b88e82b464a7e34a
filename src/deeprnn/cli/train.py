"""``deeprnn train``, ``eval`` and ``reproduce``: runs made, resumed, scored and tabled."""

from __future__ import annotations

import argparse
import json
import sys

from deeprnn.cli.arguments import Commands, data_dir, trained, trained_source
from deeprnn.errors import UserError
from deeprnn.names import MODELS, SPLITS, TABLES, canonical_data, canonical_model
from deeprnn.training.ranges import CHOICES


def _train(args: argparse.Namespace) -> int:
    from deeprnn.training.config import finetune_table, parse_sets, pretraining_table, resolve
    from deeprnn.training.trainer import train

    limits = None
    if args.resume:
        if args.model or args.config or args.data:
            raise UserError(
                "--resume continues a run with its saved configuration; drop --model, --data and --config"
                " (--set may only change its limits, epochs, max_updates and time_budget_s, and"
                " average_after_epochs before averaging begins)"
            )
        out, config = args.resume, None
        limits = parse_sets(args.set or [])
    else:
        if not args.out:
            raise UserError("give --out RUN_DIR (or --resume RUN_DIR)")
        sets = list(args.set or [])
        if args.device:
            sets.append(f"device={args.device}")
        out, config = args.out, resolve(args.model, args.data, args.config, sets)
        if finetune_table(config.model, config.data, args.config) is not None:
            print(
                f"note: the config of {config.model} on {config.data} has a [finetune] stage, which"
                " deeprnn reproduce trains after this run; deeprnn train trains this run alone (train"
                f" the stage with --set init_from={out} and the table's settings)",
                file=sys.stderr,
            )
        if pretraining_table(config.model, config.data, args.config) is not None:
            print(
                f"note: the config of {config.model} on {config.data} has a [pretraining] table, the"
                " settings of the run deeprnn reproduce trains first to start it from; deeprnn train"
                " trains this run alone (from the run you give as --set init_from=RUN, if any)",
                file=sys.stderr,
            )
    results = train(
        config,
        out,
        data_dir=args.data_dir,
        resume=bool(args.resume),
        limits=limits,
        force=args.force,
        device=args.device,
    )
    metric = results["metric"]
    print(
        json.dumps(
            {
                "run": str(out),
                "metric": metric,
                "valid": results[f"valid_{metric}"],
                "test": results[f"test_{metric}"],
            }
        )
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from deeprnn.training.evaluation import evaluate_run

    source = trained_source(args)
    result = evaluate_run(
        source,
        args.split,
        data_dir=args.data_dir,
        device=args.device,
        per_piece=args.per_piece,
        from_second=args.from_second_frame,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{source}: {result['split']} {result['metric']} {result['value']:.4f} "
        f"({result['count']:,} targets, parameters of update {result['update']})"
    )
    if args.per_piece:
        scored = [p for p in result["pieces"] if p["frames"]]  # a piece without frames has no NLL per frame
        worst = sorted(scored, key=lambda p: -p["nll"])[:10]
        print("the pieces with the largest share of the NLL (piece: frames, NLL per frame, share):")
        for p in worst:
            piece = p["name"] or f"piece {p['piece']} of {result['split']}"
            print(f"  {piece}: {p['frames']:,}, {p['nll_per_frame']:.3f}, {p['nll'] / result['nll']:.1%}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from deeprnn.reproduce import models_of, reproduce

    tables = list(TABLES) if args.table == "all" else [args.table]
    models = [canonical_model(m) for m in args.models] if args.models else None
    for table in tables:
        datas = [d for d in map(canonical_data, args.data) if d in TABLES[table].data] if args.data else None
        if (args.data and not datas) or (models and not models_of(table, models)):
            if args.table != "all":
                raise UserError(f"none of the data sets or models asked for is in the {table} table")
            continue
        result = reproduce(
            table,
            args.out,
            models=models,
            datas=datas,
            data_dir=args.data_dir,
            sets=args.set,
            pretraining=args.pretraining,
            tables=args.tables,
        )
        if result is not None:
            print(f"{args.tables or args.out}/{table}.json: {len(result['rows'])} rows")
    return 0


def _train_parser(commands) -> None:
    train = commands.add_parser("train", help="train a model (the paper's recipe by default)")
    train.add_argument("--model", help=f"a preset: {', '.join(MODELS)}")
    train.add_argument("--data", help="a data set name or a path (MIDI folder, .mat, text folder)")
    train.add_argument("--config", help="a TOML file of settings")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    train.add_argument("--out", help="the run folder")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR where it stopped; with --set epochs=, max_updates= or "
        "time_budget_s=, extend a run that stopped at its limit; with --set average_after_epochs=, "
        "add parameter averaging from an epoch the run has not begun",
    )
    train.add_argument("--force", action="store_true", help="replace the run in --out (only a run folder)")
    train.add_argument("--device", choices=CHOICES["device"], help="where to train (default: auto)")
    data_dir(train)
    train.set_defaults(run=_train)


def _eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="score a run's best parameters")
    trained(evaluate)
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--device", choices=CHOICES["device"])
    data_dir(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--per-piece",
        action="store_true",
        help="music: also score each piece alone (JSON: all; else the worst 10)",
    )
    evaluate.add_argument(
        "--from-second-frame",
        action="store_true",
        help="music: leave each piece's first frame out (the TCN paper's convention; ours scores all)",
    )
    evaluate.set_defaults(run=_eval)


def _reproduce_parser(commands) -> None:
    repro = commands.add_parser("reproduce", help="run the paper's experiments and write its tables")
    repro.add_argument("table", choices=[*TABLES, "all"])
    repro.add_argument("--models", nargs="+", help="only these models (default: the table's)")
    repro.add_argument("--data", nargs="+", help="only these data sets (default: the table's)")
    repro.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every run")
    repro.add_argument("--out", required=True, help="where the runs, tables and plots go")
    repro.add_argument(
        "--tables",
        metavar="DIR",
        help="write the tables and plots into DIR instead, over the tables there (e.g. results: "
        "the finished runs' rows land there, its other rows stay)",
    )
    repro.add_argument(
        "--no-pretraining",
        dest="pretraining",
        action="store_false",
        help="start sRNN and DOT(S)-RNN from scratch (default: from a trained RNN / DT(S)-RNN, as the paper)",
    )
    data_dir(repro)
    repro.set_defaults(run=_reproduce)


def add_commands(commands: Commands) -> None:
    for add in (_train_parser, _eval_parser, _reproduce_parser):
        add(commands)
