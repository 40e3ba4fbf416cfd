#!/bin/sh
# lorad — scripts/run-demo.sh: `make run`. Writes the demo model and
# adapters (build/lorad-mkdemo) unless they exist, prints curl commands to
# try, then runs the daemon on the demo config and, once it is ready, gives
# it three slots: default (demo-a, the initial adapter), team-b (demo-b)
# and team-c (demo-c). Signals go to the daemon; the script exits with it.
#   usage: scripts/run-demo.sh BUILD_DIR
set -eu
B=${1:-build}
DEMO="$B/demo"
if [ ! -f "$DEMO/lorad.json" ] || [ ! -d "$DEMO/model" ]; then
    echo "run-demo: writing the demo model and adapters into $DEMO"
    "$B/lorad-mkdemo" "$DEMO" >/dev/null
fi
# The address the demo config listens on (default 127.0.0.1:8080).
ADDR=$(sed -n 's/.*"listen"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$DEMO/lorad.json" | head -n 1)
ADDR=${ADDR:-127.0.0.1:8080}
case "$ADDR" in
    unix:*) URL="http://localhost"; CURL="curl -s --unix-socket ${ADDR#unix:}" ;;
    *) URL="http://$ADDR"; CURL="curl -s" ;;
esac
IN=$(sed -n 's/.*"in_features"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p' "$DEMO/model/config.json" | head -n 1)
IN=${IN:-4}
cat <<MSG

lorad demo: serving $DEMO/model with adapters from $DEMO/adapters on $URL
Try, in another terminal:

  # inference (one row of $IN features, all 0.5)
  $CURL -X POST $URL/infer -d "{\"input\": [\$(yes 0.5 | head -n $IN | paste -sd,)]}"
  # hot-swap to another adapter, then as a 10 % canary
  $CURL -X POST $URL/swap -d '{"adapter": "demo-b"}'
  $CURL -X POST $URL/rollback -d '{}'
  $CURL -X POST $URL/swap -d '{"adapter": "demo-c", "canary_percent": 10}'
  $CURL -X POST $URL/promote -d '{}'
  # a broken adapter (rank above max_rank) is refused and nothing changes
  $CURL -X POST $URL/swap -d '{"adapter": "bad-rank"}'
  # slots: team-b and team-c serve their own adapters beside default
  $CURL -X POST $URL/infer -d "{\"slot\": \"team-b\", \"input\": [\$(yes 0.5 | head -n $IN | paste -sd,)]}"
  $CURL -X POST $URL/swap -d '{"slot": "team-d", "adapter": "demo-f16"}'
  $CURL -X POST $URL/rollback -d '{"slot": "team-d"}'
  $CURL -X POST $URL/unload -d '{"slot": "team-d"}'
  # state, adapters, metrics
  $CURL $URL/status
  $CURL $URL/adapters
  $CURL $URL/metrics

Ctrl-C (SIGINT) drains and exits; SIGHUP reloads the config.

MSG
"$B/lorad" --config "$DEMO/lorad.json" &
PID=$!
for sig in INT TERM HUP; do
    # shellcheck disable=SC2064
    trap "kill -s $sig $PID 2>/dev/null" "$sig"
done
# The demo's slots, once the daemon is ready (kept by its state file).
if command -v curl >/dev/null 2>&1; then
    i=0
    while [ $i -lt 100 ] && ! $CURL -o /dev/null -f "$URL/readyz" 2>/dev/null; do
        kill -0 $PID 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    for pair in team-b:demo-b team-c:demo-c; do
        slot=${pair%%:*}
        if ! $CURL "$URL/status" 2>/dev/null | grep -q "\"$slot\""; then
            $CURL -o /dev/null -X POST "$URL/swap" \
                -d "{\"slot\": \"$slot\", \"adapter\": \"${pair#*:}\"}" || true
        fi
    done
    echo "run-demo: slots default (demo-a), team-b (demo-b), team-c (demo-c)"
fi
# wait returns early when a trapped signal arrives: wait again until the
# daemon has exited, then exit with its status
while :; do
    rc=0
    wait $PID || rc=$?
    kill -0 $PID 2>/dev/null || break
done
exit "$rc"
