"""``deeprnn info``, ``bench`` and ``data``: what a preset holds, how fast it runs, which data
sets are here."""

from __future__ import annotations

import argparse
import json

from deeprnn.bench import MODES, TASKS
from deeprnn.cli.arguments import Commands, checked, data_dir
from deeprnn.errors import UserError
from deeprnn.names import DATA_SETS, GRID_RULE, MODELS, canonical_model, writable_grid
from deeprnn.presets import describe_preset
from deeprnn.training.ranges import CHOICES

_frames_per_beat = checked(int, writable_grid, GRID_RULE)


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
    hidden = tuple(args.hidden) if args.hidden else (None if not args.quick else (64,))
    modes = tuple(args.modes)
    show = None if args.json else (lambda case: print(bench.format_row(case), flush=True))
    result = bench.run(
        models,
        hidden,
        shapes,
        modes,
        args.device,
        args.seconds,
        progress=show,
        tasks=tuple(args.tasks),
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
    )
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


def _info_parser(commands) -> None:
    info = commands.add_parser("info", help="layers and parameter counts of a preset")
    info.add_argument("--model", required=True, help=", ".join(MODELS))
    info.add_argument("--task", required=True, help=", ".join(DATA_SETS))
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)


def _bench_parser(commands) -> None:
    bench = commands.add_parser("bench", help="throughput of every preset against torch.nn.RNN")
    bench.add_argument("--models", nargs="+", help="presets to measure (default: all)")
    bench.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        choices=list(TASKS),
        help="shapes to measure (default: all)",
    )
    sizes = "; ".join(f"{task} {' '.join(map(str, sizes))}" for task, (_, _, sizes) in TASKS.items())
    bench.add_argument("--hidden", nargs="+", type=int, help=f"hidden sizes (default: {sizes})")
    bench.add_argument("--modes", nargs="+", default=["train", "eval"], choices=MODES)
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--seconds", type=float, default=1.0, help="measuring time per case and model")
    bench.add_argument(
        "--precision", default="fp32", choices=CHOICES["precision"], help="bf16: both sides under autocast"
    )
    bench.add_argument(
        "--cuda-graphs", action="store_true", help="both sides' steps captured as CUDA graphs (a GPU only)"
    )
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
    data_dir(data)
    data.add_argument("--level", default="word", choices=CHOICES["text_level"], help="for a text folder")
    data.add_argument("--frames-per-beat", type=_frames_per_beat, default=4, help="for a MIDI folder")
    data.add_argument("--json", action="store_true", help="stats as one JSON object")
    data.set_defaults(run=_data)


def add_commands(commands: Commands) -> None:
    for add in (_info_parser, _bench_parser, _data_parser):
        add(commands)
