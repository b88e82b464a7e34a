"""``python -m deeprnn``: the command line (what ``torchrun -m deeprnn train ...`` starts)."""

import sys

from deeprnn.cli import main

sys.exit(main())
