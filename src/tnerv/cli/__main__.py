"""`python -m tnerv.cli` runs the command line, as `python -m tnerv` does."""

import sys

from tnerv.cli import main

sys.exit(main())
