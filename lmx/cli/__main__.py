"""`python -m lmx.cli VERB ...`, the same as the `lmx` console script."""

import sys

from lmx.cli.app import main

sys.exit(main())
