#!/bin/sh
# lorad — bench/converge.sh: `make bench-converge` (SPEC.md 12, not CI).
# Usage: ./bench/converge.sh BUILD_DIR  (after BUILD_DIR/lorad,
# lorad-sync and lorad-mkdemo are built).
#
# Measures the fleet's convergence through etcd: the time from the write
# of desired/default to the last instance's commit, for N instances
# (default "3 8", BENCH_CONVERGE_N), each a lorad with its lorad-sync agent
# (defaults: 10 s lease, resync 3.3 s) against one local etcd on loopback.
#   swap:     desired/default = {"adapter": X}, X alternating demo-b and
#             demo-a (a stable swap on every instance);
#   rollback: desired/default = {"adapter": "demo-b", "canary_percent": 50}
#             (waited for), then the previous value {"adapter": "demo-a"}
#             is written back: every instance aborts its canary.
# The write goes through the v3 gateway with curl (the clock starts just
# before it, so a few ms of curl are included); an instance's commit is its
# agent's "event=converge" log line (printed when lorad answered the
# control request: after the commit and the state file's fsync). Rounds per
# case: BENCH_CONVERGE_ROUNDS (default 10). Prints p50 and max per case
# (ms) and writes BUILD_DIR/bench/converge.md.
set -eu
B=${1:-build}
NS=${BENCH_CONVERGE_N:-"3 8"}
ROUNDS=${BENCH_CONVERGE_ROUNDS:-10}
for f in "$B/lorad" "$B/lorad-sync" "$B/lorad-mkdemo"; do
    [ -x "$f" ] || { echo "converge: $f missing (run make bench-converge)" >&2; exit 1; }
done
command -v etcd >/dev/null 2>&1 || { echo "converge: etcd missing (apt-get install etcd-server)" >&2; exit 1; }
B=$(cd "$B" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/lorad-converge.XXXXXX")
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# milliseconds since midnight UTC, now and of an agent log line's stamp
now_ms() { date -u +%H:%M:%S.%3N | awk -F'[:.]' '{ print (($1 * 60 + $2) * 60 + $3) * 1000 + $4 }'; }
EPORT=$(port)
EPEER=$(port)
ETCD="http://127.0.0.1:$EPORT"
etcd --data-dir "$T/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$EPEER" --initial-advertise-peer-urls "http://127.0.0.1:$EPEER" \
    --initial-cluster "default=http://127.0.0.1:$EPEER" --log-level warn >"$T/etcd.log" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 100); do
    curl -sf -X POST -d '{"key":"AA=="}' "$ETCD/v3/kv/range" >/dev/null 2>&1 && break
    sleep 0.1
done
"$B/lorad-mkdemo" "$T/demo" >/dev/null

b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
put() {
    curl -sf -X POST -d "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}" "$ETCD/v3/kv/put" >/dev/null
}

# wait_lines PREFIX N ACTION ADAPTER: waits until every agent log of this
# fleet has more "action=ACTION adapter=ADAPTER" lines than `mark` counted;
# prints the newest such stamp (ms since midnight) of the slowest instance.
wait_lines() {
    _pre=$1
    _n=$2
    _pat="event=converge slot=default action=$3 adapter=$4 "
    for _ in $(seq 3000); do
        _done=0
        _i=1
        while [ "$_i" -le "$_n" ]; do
            _c=$(grep -c "$_pat" "$T/$_pre$_i/sync.log" || true)
            [ "$_c" -gt "$(cat "$T/$_pre$_i/count")" ] && _done=$((_done + 1))
            _i=$((_i + 1))
        done
        [ "$_done" -lt "$_n" ] || break
        sleep 0.01
    done
    _i=1
    while [ "$_i" -le "$_n" ]; do
        grep "$_pat" "$T/$_pre$_i/sync.log" | tail -n 1 | cut -c12-23
        _i=$((_i + 1))
    done | awk -F'[:.]' '{ v = (($1 * 60 + $2) * 60 + $3) * 1000 + $4; if (v > m) m = v } END { print m }'
}

mark() { # snapshots every agent's count of "action=ACTION adapter=A" lines
    _i=1
    while [ "$_i" -le "$2" ]; do
        grep -c "event=converge slot=default action=$3 adapter=$4 " "$T/$1$_i/sync.log" >"$T/$1$_i/count" || true
        _i=$((_i + 1))
    done
}

stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%d %d", v[int((NR + 1) / 2)], v[NR] }'; }

echo "| instances | case | writes | p50 ms | max ms |" >"$T/results.md"
echo "|---|---|---|---|---|" >>"$T/results.md"
for N in $NS; do
    P="n$N-"
    i=1
    while [ "$i" -le "$N" ]; do
        d="$T/$P$i"
        mkdir -p "$d"
        lp=$(port)
        jq --arg l "127.0.0.1:$lp" --arg s "$d/state.json" \
            '.listen = $l | .state_file = $s | .workers = 1' "$T/demo/lorad.json" >"$d/lorad.json"
        "$B/lorad" --config "$d/lorad.json" >"$d/lorad.log" 2>&1 &
        PIDS="$PIDS $!"
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$lp/readyz" >/dev/null && break; sleep 0.05; done
        "$B/lorad-sync" --etcd "$ETCD" --prefix "/bench$N/" --name "i$i" --url "http://127.0.0.1:$lp" \
            >"$d/sync.log" 2>&1 &
        PIDS="$PIDS $!"
        echo 0 >"$d/count"
        i=$((i + 1))
    done
    sleep 1
    : >"$T/swap.$N"
    : >"$T/rollback.$N"
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        # swap: to demo-b and back to demo-a, both measured
        for to in demo-b demo-a; do
            mark "$P" "$N" swap "$to"
            t0=$(now_ms)
            put "/bench$N/desired/default" "{\"adapter\":\"$to\"}"
            t1=$(wait_lines "$P" "$N" swap "$to")
            echo $((t1 - t0)) >>"$T/swap.$N"
        done
        # rollback: canary first, then the previous value
        mark "$P" "$N" swap_canary demo-b
        put "/bench$N/desired/default" '{"adapter":"demo-b","canary_percent":50}'
        wait_lines "$P" "$N" swap_canary demo-b >/dev/null
        mark "$P" "$N" abort demo-a
        t0=$(now_ms)
        put "/bench$N/desired/default" '{"adapter":"demo-a"}'
        t1=$(wait_lines "$P" "$N" abort demo-a)
        echo $((t1 - t0)) >>"$T/rollback.$N"
        r=$((r + 1))
    done
    printf 'converge: %d instances: swap rounds %s\n' "$N" "$(tr '\n' ' ' <"$T/swap.$N")"
    printf 'converge: %d instances: rollback rounds %s\n' "$N" "$(tr '\n' ' ' <"$T/rollback.$N")"
    for c in swap rollback; do
        # shellcheck disable=SC2046
        set -- $(stats <"$T/$c.$N")
        _k=$(grep -c . "$T/$c.$N")
        printf 'converge: %d instances, %s: p50 %d ms, max %d ms over %d writes\n' "$N" "$c" "$1" "$2" "$_k"
        echo "| $N | $c | $_k | $1 | $2 |" >>"$T/results.md"
    done
done
mkdir -p "$B/bench"
cp "$T/results.md" "$B/bench/converge.md"
cat "$B/bench/converge.md"
