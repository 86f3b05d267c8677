"""``python -m labkit.bench worker vllm|hf ARGS_JSON``: an engine worker (internal)."""

from __future__ import annotations

import sys

from labkit.bench.worker import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
