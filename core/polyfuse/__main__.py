"""``python -m polyfuse``: the command line, for launchers that take a module (torchrun, subprocesses in tests)."""

import sys

from polyfuse.cli import main

sys.exit(main())
