"""``python -m labkit.query offline JOB OUT``: the offline batch's child process (internal)."""

from __future__ import annotations

import sys

from labkit.query.offline import main

if __name__ == "__main__":
    sys.exit(main())
