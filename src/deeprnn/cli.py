"""The ``deeprnn`` command line: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

from deeprnn import __version__
from deeprnn.errors import TrainingDiverged, UserError
from deeprnn.names import DATA_SETS, MODELS, SPLITS, TABLES, canonical_data, canonical_model
from deeprnn.presets import describe_preset
from deeprnn.runtime import keep_freed_memory
from deeprnn.training.ranges import CHOICES

MAX_SAMPLE_STEPS = 10_000  # frames or tokens per sample, unless --long
EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


def _info(args: argparse.Namespace) -> int:
    result = describe_preset(args.model, args.task)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    name, task, weights, params = (result[k] for k in ("model", "task", "weights", "params"))
    print(f"{name} on {task}: {weights:,} weights (biases excluded), {params:,} parameters")
    for row in result["layers"]:
        print(f"  {row['layer']:<14} {row['weights']:>10,} {row['params']:>10,}  {row['what']}")
    if result["size_ratios"]:
        ratios = ", ".join(f"{k} {' / '.join(f'{r:g}' for r in v)}" for k, v in result["size_ratios"].items())
        print(f"  widths per hidden unit: {ratios} (--set hidden_size=N scales them together)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from deeprnn import bench

    models = [canonical_model(m) for m in args.models] if args.models else bench.MODELS
    shapes = bench.SHAPES if not args.quick else ((8, 20),)
    hidden = tuple(args.hidden) if args.hidden else (bench.HIDDEN if not args.quick else (64,))
    modes = tuple(args.modes)
    show = None if args.json else (lambda case: print(bench.format_row(case), flush=True))
    result = bench.run(models, hidden, shapes, modes, device=args.device, seconds=args.seconds, progress=show)
    if args.json:
        print(json.dumps(result, indent=2))
    if args.out:
        from deeprnn.io import write_json

        write_json(args.out, result)
    return 0


def _data(args: argparse.Namespace) -> int:
    from deeprnn import data
    from deeprnn.data import registry

    root = registry.data_dir(args.data_dir)
    if args.action == "list":
        for d in registry.DATASETS.values():
            print(f"{d.name:<13} {d.kind:<6} {'present' if d.present(root) else 'missing':<8} {d.about}")
        print(f"data folder: {root}")
        return 0
    if args.action == "verify":
        rows = registry.verify(root)
        for row in rows:
            print(f"{row['status']:<18} {row['path']}")
        bad = [r for r in rows if r["status"] == "checksum mismatch"]
        missing = [d.name for d in registry.DATASETS.values() if not d.present(root)]
        print(f"data folder: {root}")
        if missing:
            print(f"missing data sets: {', '.join(missing)} (deeprnn data download)")
        return 1 if bad or missing else 0
    if args.action == "download":
        from deeprnn.data.download import download

        download(root, args.name or "all")
        return 0
    if not args.name:
        raise UserError("data stats needs a data set name or a path")
    corpus = data.load(args.name, root, text_level=args.level, frames_per_beat=args.frames_per_beat)
    result = data.stats(corpus)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<11} {value}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from deeprnn.training.config import finetune_table, parse_sets, resolve
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

    result = evaluate_run(
        args.run_dir,
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
        f"{args.run_dir}: {result['split']} {result['metric']} {result['value']:.4f} "
        f"({result['count']:,} targets, parameters of update {result['update']})"
    )
    if args.per_piece:
        worst = sorted(result["pieces"], key=lambda p: -p["nll"])[:10]
        print("the pieces with the largest share of the NLL (piece: frames, NLL per frame, share):")
        for p in worst:
            print(
                f"  {p['piece']}: {p['frames']:,}, {p['nll_per_frame']:.3f}, {p['nll'] / result['nll']:.1%}"
            )
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from deeprnn.reproduce import reproduce

    tables = list(TABLES) if args.table == "all" else [args.table]
    models = [canonical_model(m) for m in args.models] if args.models else None
    for table in tables:
        datas = [d for d in map(canonical_data, args.data) if d in TABLES[table].data] if args.data else None
        if args.data and not datas:
            continue
        result = reproduce(
            table,
            args.out,
            models=models,
            datas=datas,
            data_dir=args.data_dir,
            sets=args.set,
            pretraining=args.pretraining,
        )
        if result is not None:
            print(f"{args.out}/{table}.json: {len(result['rows'])} rows")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from deeprnn.sampling import write_samples

    if args.steps > MAX_SAMPLE_STEPS and not args.long:
        raise UserError(
            f"--steps {args.steps:,} is above the limit of {MAX_SAMPLE_STEPS:,} frames or tokens per "
            "sample; pass --long to draw that many anyway"
        )
    options = {"steps": args.steps, "count": args.count, "temperature": args.temperature, "seed": args.seed}
    for line in write_samples(args.run_dir, args.out, device=args.device, **options):
        print(line)
    return 0


def _checked(kind: type, test, must: str):
    """An argparse type: ``kind(text)``, refused with ``must`` unless ``test`` holds."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value

    return parse


_at_least_1 = _checked(int, lambda v: v >= 1, "at least 1")
_above_0 = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0")


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="the data folder (default: $DEEPRNN_DATA, else ~/.cache/deeprnn/data)"
    )


def _info_parser(commands) -> None:
    info = commands.add_parser("info", help="layers and parameter counts of a preset")
    info.add_argument("--model", required=True, help=", ".join(MODELS))
    info.add_argument("--task", required=True, help=", ".join(DATA_SETS))
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)


def _bench_parser(commands) -> None:
    bench = commands.add_parser("bench", help="throughput of every preset against torch.nn.RNN")
    bench.add_argument("--models", nargs="+", help="presets to measure (default: all)")
    bench.add_argument("--hidden", nargs="+", type=int, help="hidden sizes (default: 256 512)")
    bench.add_argument("--modes", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--seconds", type=float, default=1.0, help="measuring time per case and model")
    bench.add_argument("--quick", action="store_true", help="one small shape (a smoke test)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--out", help="also write the JSON results to this file")
    bench.set_defaults(run=_bench)


def _data_parser(commands) -> None:
    data = commands.add_parser("data", help="list, verify, download and describe data sets")
    data.add_argument("action", choices=["list", "verify", "download", "stats"])
    data.add_argument(
        "name", nargs="?", help=f"a data set ({', '.join(DATA_SETS)}), 'all', or a path (stats)"
    )
    _data_dir(data)
    data.add_argument("--level", default="word", choices=CHOICES["text_level"], help="for a text folder")
    data.add_argument("--frames-per-beat", type=int, default=4, help="for a MIDI folder")
    data.add_argument("--json", action="store_true", help="stats as one JSON object")
    data.set_defaults(run=_data)


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
    _data_dir(train)
    train.set_defaults(run=_train)


def _eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="score a run's best parameters")
    evaluate.add_argument("run_dir", metavar="RUN", help="the run folder")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--device", choices=CHOICES["device"])
    _data_dir(evaluate)
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


def _sample_parser(commands) -> None:
    sampler = commands.add_parser("sample", help="sample music (MIDI, piano roll) or text from a run")
    sampler.add_argument("run_dir", metavar="RUN", help="the run folder")
    sampler.add_argument("--steps", type=_at_least_1, default=200, help="frames or tokens per sample")
    sampler.add_argument(
        "--long", action="store_true", help=f"allow more than {MAX_SAMPLE_STEPS:,} steps per sample"
    )
    sampler.add_argument("--count", type=_at_least_1, default=1, help="number of samples")
    sampler.add_argument(
        "--temperature",
        type=_above_0,
        default=1.0,
        help="the logits are divided by it (lower: more conservative)",
    )
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--device", choices=CHOICES["device"])
    sampler.add_argument("--out", required=True, help="folder for the samples")
    sampler.set_defaults(run=_sample)


def _reproduce_parser(commands) -> None:
    repro = commands.add_parser("reproduce", help="run the paper's experiments and write its tables")
    repro.add_argument("table", choices=[*TABLES, "all"])
    repro.add_argument("--models", nargs="+", help="only these models (default: the table's)")
    repro.add_argument("--data", nargs="+", help="only these data sets (default: the table's)")
    repro.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every run")
    repro.add_argument("--out", required=True, help="where the runs, tables and plots go")
    repro.add_argument(
        "--no-pretraining",
        dest="pretraining",
        action="store_false",
        help="start sRNN and DOT(S)-RNN from scratch (default: from a trained RNN / DT(S)-RNN, as the paper)",
    )
    _data_dir(repro)
    repro.set_defaults(run=_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeprnn", description="Deep recurrent neural networks (Pascanu et al., ICLR 2014)."
    )
    parser.add_argument("--version", action="version", version=f"deeprnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _info_parser,
        _bench_parser,
        _data_parser,
        _train_parser,
        _eval_parser,
        _sample_parser,
        _reproduce_parser,
    ):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    finished = False
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        finished = True
        return code
    except UserError as error:
        return _fail(args.command, str(error), EXIT_USER_ERROR)
    except TrainingDiverged as error:
        return _fail(args.command, str(error), EXIT_DIVERGED)
    except BrokenPipeError:  # the reader went away (deeprnn … | head): leave quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # permissions, a full disk, a missing path: the file and the cause
        where = f"{error.filename}: " if error.filename else ""
        return _fail(args.command, f"{where}{error.strerror or error}", EXIT_USER_ERROR)
    finally:
        if "torch.distributed" in sys.modules:  # a torchrun launch joined a process group
            from deeprnn.training.distributed import leave_process_group

            leave_process_group(finished)


def _fail(command: str, message: str, code: int) -> int:
    print(f"deeprnn {command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
