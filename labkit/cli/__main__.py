"""`python -m labkit.cli`: the `labkit` command."""

import sys

from labkit.cli.app import main

sys.exit(main())
