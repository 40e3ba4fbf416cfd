#!/bin/sh
# lorad — bench/run.sh: `make bench` entry point (SPEC.md 10).
# Usage: ./bench/run.sh BUILD_DIR  (after BUILD_DIR/lorad, lorad-mkdemo and
# bench/roof are built). Installs wrk with apt-get when missing, then runs
# bench/bench.py, which prints one table and writes BUILD_DIR/bench/results.md.
# Environment knobs: BENCH_LOAD_S (10), BENCH_SWAP_S (30), BENCH_CONNS
# (1,16,32,64), BENCH_MEM_SWAPS (10000), BENCH_SLOTS (100), BENCH_ONLY (slots: that part alone).
set -eu
B=${1:-build}
for f in "$B/lorad" "$B/lorad-mkdemo" "$B/bench/roof"; do
    [ -x "$f" ] || { echo "bench: $f missing (run make bench)" >&2; exit 1; }
done
if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk (apt-get)"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get install -y wrk >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
if ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    echo "bench: peer SKIPPED: /usr/bin/python3 cannot import torch (apt-get install python3-torch python3-numpy)"
fi
PYTHONDONTWRITEBYTECODE=1 exec "$PY" "$(dirname "$0")/bench.py" "$B"
