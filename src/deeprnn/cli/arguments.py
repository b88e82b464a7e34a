"""Argument types and options that several commands share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deeprnn.published import Published

Commands = argparse._SubParsersAction  # what each command module adds its subcommands to


def checked(kind: type, test: Callable[[Any], bool], must: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, refused with ``must`` unless ``test`` holds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value

    return parse


at_least_1 = checked(int, lambda v: v >= 1, "at least 1")
above_0 = checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0")


def data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="the data folder (default: $DEEPRNN_DATA, else ~/.cache/deeprnn/data)"
    )


def trained(parser: argparse.ArgumentParser) -> None:
    """What a command scores or samples: a run folder, or published weights by name."""
    parser.add_argument("run_dir", metavar="RUN", nargs="?", help="the run folder")
    parser.add_argument(
        "--pretrained", metavar="NAME", help="published weights instead of a run (data/model: jsb/dts-rnn)"
    )


def trained_source(args: argparse.Namespace) -> str | Published:
    """The run folder or the published weights (:class:`deeprnn.published.Published`) asked for."""
    from deeprnn.errors import UserError
    from deeprnn.published import Published

    if (args.run_dir is None) == (args.pretrained is None):
        raise UserError("give a run folder or --pretrained NAME, one of the two")
    return Published(args.pretrained) if args.pretrained else args.run_dir
