"""`python -m rrg ...`: the `rrg` command, as torchrun starts it (`torchrun --nproc_per_node N -m rrg train ...`)."""

import sys

from rrg.cli import main

sys.exit(main())
