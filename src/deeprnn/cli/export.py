"""``deeprnn export``: a trained model's one step as an ONNX graph, to serve or sample elsewhere."""

from __future__ import annotations

import argparse

from deeprnn.cli.arguments import trained, trained_source


def _export(args: argparse.Namespace) -> int:
    from deeprnn.export import export_step, state_names
    from deeprnn.training.evaluation import load_best

    model, _, update = load_best(trained_source(args), "cpu")
    path = export_step(model, args.out, args.opset)
    names = ", ".join(state_names(model))
    print(f"{path}: one step of the parameters of update {update}")
    print(f"inputs x, {names}; outputs logits, new {names} (any batch size)")
    return 0


def add_commands(commands) -> None:
    export = commands.add_parser("export", help="one step of a trained model as ONNX, to serve or sample")
    trained(export)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, help="the ONNX opset (default: the exporter's)")
    export.set_defaults(run=_export)
