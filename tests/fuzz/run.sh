#!/bin/sh
# lorad — tests/fuzz/run.sh: runs the libFuzzer harnesses built by
# `make fuzz-build` (mk/fuzz.mk) in $FUZZ_B (default build/fuzz).
#
#   run.sh NAME...            for each harness: replay its seed corpus and
#                             tests/fuzz/regressions/NAME/, then fuzz for
#                             $FUZZ_SECONDS (default 60) with the seeds plus a
#                             working corpus in $FUZZ_B/corpus/NAME
#   run.sh --replay NAME...   only the replay (a few seconds in all)
#
# With $FUZZ_RUNS set, each harness instead runs that many inputs from the
# fixed random seed $FUZZ_SEED (default 1): what CI runs, so that a clean
# clone fuzzes the same inputs every time and a CI result can be
# reproduced here. Fuzzing for time (the default) explores new inputs.
#
# Crash, leak, timeout and sanitizer inputs land in $FUZZ_B/artifacts/NAME/
# and the script exits 1; copy such an input to tests/fuzz/regressions/NAME/
# so that every later run replays it. Each harness's log is kept in
# $FUZZ_B/logs/NAME.log and its final coverage line printed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
B=${FUZZ_B:-build/fuzz}
secs=${FUZZ_SECONDS:-60}
budget="-max_total_time=$secs"
[ -n "${FUZZ_RUNS:-}" ] && budget="-runs=$FUZZ_RUNS -seed=${FUZZ_SEED:-1}"
replay_only=0
if [ "${1:-}" = "--replay" ]; then
    replay_only=1
    shift
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$B/logs"
bad=""
for name in "$@"; do
    bin="$B/fuzz_$name"
    seeds="$here/corpus/$name"
    regs="$here/regressions/$name"
    art="$B/artifacts/$name/"
    log="$B/logs/$name.log"
    mkdir -p "$art" "$B/corpus/$name"
    # Replay: libFuzzer runs every file given (directories: every file in
    # them) once with -runs=0 and stops at the first failure.
    set --
    [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] && set -- "$@" "$seeds"
    [ -d "$regs" ] && [ -n "$(ls -A "$regs")" ] && set -- "$@" "$regs"
    if [ $# -gt 0 ]; then
        if "$bin" -runs=0 -artifact_prefix="$art" "$@" >"$log.replay" 2>&1; then
            printf '%-16s replay ok (%s inputs)\n' "$name" "$(find "$@" -type f | wc -l)"
        else
            printf '%-16s REPLAY FAILED (log %s)\n' "$name" "$log.replay"
            tail -n 40 "$log.replay" | sed "s/^/    $name| /"
            bad="$bad $name"
            continue
        fi
    fi
    [ "$replay_only" = 1 ] && continue
    dict=
    [ -f "$here/$name.dict" ] && dict="-dict=$here/$name.dict"
    # shellcheck disable=SC2086 # $dict is empty or one word, $budget one or two
    if "$bin" $budget -timeout=10 -rss_limit_mb=2048 -max_len=65536 $dict \
        -print_final_stats=1 -artifact_prefix="$art" "$B/corpus/$name" "$@" >"$log" 2>&1; then
        stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1)
        printf '%-16s ok: %s\n' "$name" "$stats"
    else
        printf '%-16s FAILED (log %s, inputs in %s)\n' "$name" "$log" "$art"
        grep -E 'ERROR|SUMMARY|runtime error|deadly signal|#[0-9]+ 0x' "$log" | head -n 30 \
            | sed "s/^/    $name| /"
        bad="$bad $name"
    fi
done
[ -z "$bad" ] || { echo "fuzz: failing:$bad"; exit 1; }
exit 0
