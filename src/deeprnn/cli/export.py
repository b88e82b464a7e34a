"""``deeprnn export``: a trained model to serve elsewhere, one step as ONNX (``.onnx``) or the
whole model with a free length as a ``torch.export`` program (``.pt2``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deeprnn.cli.arguments import Commands, trained, trained_source
from deeprnn.errors import UserError

FORMATS = {".onnx": "one step as ONNX", ".pt2": "the whole model as a torch.export program"}


def _export(args: argparse.Namespace) -> int:
    from deeprnn.export import export_sequence, export_step, state_names
    from deeprnn.io import write_atomic
    from deeprnn.training.evaluation import load_best

    suffix = Path(args.out).suffix
    if suffix not in FORMATS:
        kinds = "; ".join(f"{ending}: {what}" for ending, what in FORMATS.items())
        raise UserError(f"--out {args.out}: the file's ending says what to write ({kinds})")
    model, _, update = load_best(trained_source(args), "cpu")
    if suffix == ".pt2":
        import torch

        program = export_sequence(model)
        path = write_atomic(args.out, lambda file: torch.export.save(program, file))
        layout = "(B, T, …)" if model.recurrence.batch_first else "(T, B, …)"
        print(f"{path}: the whole model with the parameters of update {update}")
        print(f"input {layout} from zero states; outputs logits, h_n (any length, any batch size)")
        return 0
    path = export_step(model, args.out, args.opset)
    names = ", ".join(state_names(model))
    print(f"{path}: one step of the parameters of update {update}")
    print(f"inputs x, {names}; outputs logits, new {names} (any batch size)")
    return 0


def add_commands(commands: Commands) -> None:
    export = commands.add_parser(
        "export", help="a trained model to serve: one step as ONNX, or the whole model as torch.export"
    )
    trained(export)
    export.add_argument(
        "--out", required=True, help="model.onnx (one step: x_t, state -> logits, state) or model.pt2"
    )
    export.add_argument("--opset", type=int, help="the ONNX opset (default: the exporter's)")
    export.set_defaults(run=_export)
