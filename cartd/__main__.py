"""`python -m cartd` is the `cartd` command."""

import sys

from cartd.cli import main

sys.exit(main())
