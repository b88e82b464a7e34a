"""Argument types and options that several commands share."""

from __future__ import annotations

import argparse
import math


def checked(kind: type, test, must: str):
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


at_least_1 = checked(int, lambda v: v >= 1, "at least 1")
above_0 = checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0")


def data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="the data folder (default: $DEEPRNN_DATA, else ~/.cache/deeprnn/data)"
    )
