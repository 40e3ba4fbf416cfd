#!/bin/sh
# lorad — scripts/run-demo.sh: `make run`. Writes the demo model and
# adapters (build/lorad-mkdemo) unless they exist, prints curl commands to
# try, then runs the daemon in the foreground on the demo config.
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
  # state, adapters, metrics
  $CURL $URL/status
  $CURL $URL/adapters
  $CURL $URL/metrics

Ctrl-C (SIGINT) drains and exits; SIGHUP reloads the config.

MSG
exec "$B/lorad" --config "$DEMO/lorad.json"
