"""``deeprnn sample`` and ``gallery``: music and text drawn from trained runs, to listen to."""

from __future__ import annotations

import argparse

from deeprnn.cli.arguments import Commands, above_0, at_least_1, checked, trained, trained_source
from deeprnn.errors import UserError
from deeprnn.training.ranges import CHOICES

MAX_SAMPLE_STEPS = 10_000  # frames or tokens per sample, unless --long

_velocity = checked(int, lambda v: 1 <= v <= 127, "a MIDI velocity in 1..127")


def _sample(args: argparse.Namespace) -> int:
    from deeprnn.sampling import write_samples

    if args.steps > MAX_SAMPLE_STEPS and not args.long:
        raise UserError(
            f"--steps {args.steps:,} is above the limit of {MAX_SAMPLE_STEPS:,} frames or tokens per "
            "sample; pass --long to draw that many anyway"
        )
    lines = write_samples(
        trained_source(args),
        args.out,
        **_drawing(args),
        prime=args.prime,
        prime_frames=args.prime_frames,
        velocity=args.velocity,
        audio=".wav" if args.audio else None,
    )
    for line in lines:
        print(line)
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from deeprnn.gallery import write_gallery
    from deeprnn.published import Published

    if not args.runs and not args.pretrained:
        raise UserError("give run folders, or --pretrained NAME…, or both")
    sources = [*args.runs, *(Published(name) for name in args.pretrained or ())]
    page, lines = write_gallery(sources, args.out, **_drawing(args))
    for line in lines:
        print(line)
    print(f"open {page}")
    return 0


def _drawing(args: argparse.Namespace) -> dict:
    """The options of :func:`_drawing_options`, as keywords of write_samples and write_gallery."""
    return {name: getattr(args, name) for name in args.drawing}


def _drawing_options(parser: argparse.ArgumentParser, steps: int, count: int) -> None:
    added = [
        parser.add_argument("--steps", type=at_least_1, default=steps, help="frames or tokens per sample"),
        parser.add_argument("--count", type=at_least_1, default=count, help="samples per run"),
        parser.add_argument(
            "--temperature",
            type=above_0,
            default=1.0,
            help="the logits are divided by it (lower: more conservative)",
        ),
        parser.add_argument("--seed", type=int, default=0),
        parser.add_argument("--device", choices=CHOICES["device"]),
        parser.add_argument(
            "--soundfont",
            help="a .sf2 General MIDI soundfont for FluidSynth "
            "(default: $DEEPRNN_SOUNDFONT, or the system's)",
        ),
    ]
    parser.set_defaults(drawing=tuple(action.dest for action in added))  # what _drawing passes on


def _sample_parser(commands) -> None:
    sampler = commands.add_parser("sample", help="sample music (MIDI, piano roll, audio) or text from a run")
    trained(sampler)
    _drawing_options(sampler, steps=200, count=1)
    sampler.add_argument(
        "--long", action="store_true", help=f"allow more than {MAX_SAMPLE_STEPS:,} steps per sample"
    )
    sampler.add_argument(
        "--prime",
        help="continue this: a MIDI file (music) or a text (text); it opens each sample unchanged",
    )
    sampler.add_argument("--prime-frames", type=at_least_1, help="only the primer's first N frames")
    sampler.add_argument("--velocity", type=_velocity, default=80, help="of the sampled notes (1..127)")
    sampler.add_argument("--audio", action="store_true", help="also write a WAV beside each MIDI file")
    sampler.add_argument("--out", required=True, help="folder for the samples")
    sampler.set_defaults(run=_sample)


def _gallery_parser(commands) -> None:
    gallery = commands.add_parser(
        "gallery", help="a listening page: samples, piano rolls, audio and scores of runs side by side"
    )
    gallery.add_argument("runs", metavar="RUN", nargs="*", help="run folders")
    gallery.add_argument("--pretrained", nargs="+", metavar="NAME", help="published weights (jsb/dts-rnn …)")
    _drawing_options(gallery, steps=64, count=2)
    gallery.add_argument("--out", required=True, help="folder for the page (index.html) and its files")
    gallery.set_defaults(run=_gallery)


def add_commands(commands: Commands) -> None:
    for add in (_sample_parser, _gallery_parser):
        add(commands)
