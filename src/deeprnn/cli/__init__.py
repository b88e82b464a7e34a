"""The ``deeprnn`` command line: a thin layer that parses arguments and calls the library.

Its commands live by concern: :mod:`.describe` (info, bench, data), :mod:`.train` (train,
eval, reproduce), :mod:`.listen` (sample, gallery) and :mod:`.export`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from deeprnn import __version__
from deeprnn.cli import describe, export, listen, train
from deeprnn.errors import TrainingDiverged, UserError
from deeprnn.runtime import reduce_page_faults

EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeprnn", description="Deep recurrent neural networks (Pascanu et al., ICLR 2014)."
    )
    parser.add_argument("--version", action="version", version=f"deeprnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (describe, train, listen, export):
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reduce_page_faults()
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
