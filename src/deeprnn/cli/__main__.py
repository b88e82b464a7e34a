"""``python -m deeprnn.cli``: the ``deeprnn`` command."""

import sys

from deeprnn.cli import main

sys.exit(main())
