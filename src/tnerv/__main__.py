"""`python -m tnerv` (and `torchrun ... -m tnerv fit ...`) runs the command line."""

import sys

from tnerv.cli import main

sys.exit(main())
