#!/bin/bash
# The GPU machine's side of bench/README.md "On a GPU": run from the repository's root there.
#   bash bench/gpu/device.sh stash              part 1 of the vLLM 0.26 payload -> /root/stash
#   bash bench/gpu/device.sh setup              join, check and unpack the payload (once)
#   bash bench/gpu/device.sh oracles|bench-vllm|bench-hf|runtime
# Parts travel in carried folders .gpu-part0/ (lean.part.00) and .gpu-part1/ (lean.part.01, the
# sha256, tokenizer/); files outside the repository copy (/root) survive while the machine is held.
set -euo pipefail
SITE=/root/vllm026/site
TOK=/root/tokenizer
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD:$SITE VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
PY=$(command -v python3)
case "${1:-}" in
  stash)
    mkdir -p /root/stash && cp .gpu-part0/lean.part.00 /root/stash/
    ls -l /root/stash; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)"
    $PY -c "import matplotlib" 2>/dev/null && echo "matplotlib: yes" || echo "matplotlib: no" ;;
  setup)
    if [ ! -d $SITE ]; then
      cat /root/stash/lean.part.00 .gpu-part1/lean.part.01 > /root/v.tar.xz
      (cd /root && sed 's/ .*/  v.tar.xz/' $OLDPWD/.gpu-part1/vllm026-h100-lean.tar.xz.sha256 | sha256sum -c -)
      mkdir -p /root/vllm026 && $PY -c "import tarfile; tarfile.open('/root/v.tar.xz').extractall('/root/vllm026', filter='tar')"
      rm -f /root/v.tar.xz
    fi
    rm -rf $TOK && cp -r .gpu-part1/tokenizer $TOK
    $PY -c "import vllm; print('vllm', vllm.__version__)" ;;
  oracles)
    timeout 540 $PY bench/gpu/oracles.py --tokenizer $TOK --out $OUT/oracles || echo "oracles: exit $?" ;;
  bench-vllm|bench-hf)
    timeout ${BENCH_TIMEOUT:-540} $PY bench/gpu/bench.py --tokenizer $TOK --out /root/bench --parts ${1#bench-} || echo "bench: exit $?"
    mkdir -p $OUT/bench && cp -r /root/bench/. $OUT/bench/ ;;
  runtime)
    timeout 400 $PY bench/gpu/runtime_check.py --tokenizer $TOK --out $OUT/runtime || echo "runtime: exit $?" ;;
  *) echo "usage: device.sh stash|setup|oracles|bench-vllm|bench-hf|runtime" >&2; exit 2 ;;
esac
