#!/bin/sh
# lorad — scripts/fleet-rollout.sh: rolls an adapter through a fleet of lorad
# instances (e.g. the backends of deploy/haproxy.cfg), or undoes a rollout.
#
# Before touching anything it reads every instance's GET /status and records
# what it serves (stable adapter, version, sha256) in the record file
# (--state-file). The first instance is the canary: scripts/canary-rollout.sh
# runs its evidence gates there and promotes. The others then get the adapter
# in waves of --wave-size instances: POST /swap (stable), wait
# --wave-interval seconds, then gate each instance of the wave on the change
# of its stable counters over that time (non-finite rows, error rate), on
# /readyz and, with --probe, on probe rows answering 200 with finite values.
# Any failed gate or refused request rolls EVERY touched instance back to
# what it served before: POST /rollback {"version": N} while that version is
# still in its history, else POST /swap of the recorded adapter.
#
# --rollback undoes a completed rollout: with the record file, every instance
# that still serves the version this rollout gave it goes back to the
# recorded one; without a record file, every instance of --instances that
# serves --adapter is rolled back one step (POST /rollback {}).
#
# --slot S acts on slot S alone: every control request carries "slot": S
# and the state is read from /status .slots[S] (without it, or with
# "default", the requests are those of a lorad without slots).
#
# Control requests go to each instance directly (never through the load
# balancer, which would pick an arbitrary backend).
#
# etcd mode (--etcd URL --prefix P --slot S --adapter A; SPEC.md 12): the
# fleet is declared, not pushed. Every instance runs lorad-sync, which
# converges it to P/desired/S and reports it in P/instances/NAME. The script
# reads desired/S (the previous value; when absent, what every reporting
# instance serves), then writes {"adapter": A, "canary_percent": P} for
# each --steps percent, waits until every reporting instance reports the
# canary at P (or refused it: its code), gates each instance on its
# report's canary counters over --interval (non-finite rows, error rate,
# p99 ratio), and finally writes {"adapter": A} (promote). A failed gate or
# a refusal writes the previous value back and waits for the fleet to serve
# it again. Every write is a compare-and-swap on the key's mod_revision
# (/v3/kv/txn): when someone else wrote desired/S meanwhile, the script
# stops loudly (exit 5) without overwriting or rolling back. An instance
# whose report expires during the rollout leaves the gate set: it converges
# by itself when it comes back.
#
# Exit: 0 done, 1 a gate failed (every touched instance rolled back), 2 an
# instance refused a request or is not in a state to start (touched
# instances rolled back), 3 an instance (or etcd) unreachable or an
# unreadable answer, 4 rolling back failed somewhere (the log says where;
# act by hand), 5 etcd mode: another writer changed desired/S (nothing
# overwritten), 64 usage. POSIX sh, curl, jq (and base64 for etcd mode).
# jq programs below use $names that jq, not the shell, expands.
# shellcheck disable=SC2016
set -u

PROG=fleet-rollout
INSTANCES=""
ADAPTER=""
WAVE_SIZE=1
WAVE_INTERVAL=""
STATE_FILE=""
TOKEN_FILE=""
ROLLBACK=0
CANARY_SCRIPT=""
# Passed through to canary-rollout.sh (and used by the wave gates).
STEPS=""
INTERVAL=30
MAX_NONFINITE=0
MAX_ERROR_RATE=0.01
MAX_P99_RATIO=""
MIN_REQUESTS=""
PROBE=""
SHA256=""
SLOT=""
CURL_TIMEOUT=${FLEET_CURL_TIMEOUT:-60}
# etcd mode
ETCD=""
PREFIX=""
CONVERGE_TIMEOUT=60
ETCD_CACERT=""
ETCD_CERT=""
ETCD_KEY=""
ESLOT=default
DKEY=""
CUR_MOD=0
CUR_PCT=""
PREV_VALUE=""
PREV_ADAPTER=""
NAMES="[]"

TMPD=""
HTTP_STATUS=""
HTTP_BODY=""
TOUCHED=""     # instances (indexes) changed by this run, in order
RESTORE_FAILED=0

usage() {
    cat <<'EOF'
usage: fleet-rollout.sh --instances URL,URL,... --adapter NAME [options]
       fleet-rollout.sh --rollback [--state-file FILE] [--token-file F]
       fleet-rollout.sh --rollback --instances URL,... --adapter NAME
       fleet-rollout.sh --etcd URL[,URL] --prefix P [--slot S] --adapter NAME [options]

Rolls adapter NAME through a fleet of lorad instances: the first instance
as a canary (the gates of canary-rollout.sh), then the rest in waves. A
failed gate rolls every touched instance back to what it served before.

  --instances LIST      control-plane base URLs, comma separated; the first
                        one is the canary
  --adapter NAME        adapter name under each instance's adapter_dir
  --wave-size N         instances swapped together after the canary
                        (default 1)
  --wave-interval S     seconds of evidence per wave (default: --interval)
  --state-file FILE     record of what each instance served before and after
                        (default ./fleet-rollout.json); --rollback reads it
  --rollback            undo a completed rollout (see above)
  --token-file F        bearer token for control requests
  --canary-script PATH  canary-rollout.sh to use (default: next to this one)
 canary and wave gates (passed through to canary-rollout.sh):
  --steps LIST          canary percentages (canary-rollout.sh's default)
  --interval S          seconds per canary step (default 30)
  --max-nonfinite N     non-finite rows allowed (default 0)
  --max-error-rate R    share of answers >= 500 allowed (default 0.01)
  --max-p99-ratio X     canary p99 <= X * stable p99 (canary only)
  --min-requests N      requests before the latency gate (canary only)
  --probe FILE          JSON array of input rows that must answer 200 with
                        finite values (canary steps and every wave instance)
  --sha256 HEX          expected sha256 of adapter_model.safetensors
  --slot S              act on slot S alone (default: the default slot)
 etcd mode (instances run lorad-sync; --steps, --interval and the gates
 above apply, --probe does not):
  --etcd LIST           etcd endpoints (http:// or https://), comma separated
  --prefix P            the fleet's key prefix (desired/S, instances/*)
  --converge-timeout S  seconds to wait for every instance to converge to
                        each written value (default 60)
  --etcd-cacert F, --etcd-cert F, --etcd-key F   TLS to etcd
  --help                this text

exit status: 0 done, 1 a gate failed and every touched instance was rolled
back, 2 an instance refused a request (touched ones rolled back), 3 an
instance (or etcd) unreachable, 4 a roll back failed (act by hand), 5 etcd
mode: another writer changed desired/S meanwhile (nothing overwritten),
64 usage error
EOF
}

say() { printf '%s: %s %s\n' "$PROG" "$(date -u +%H:%M:%S)" "$*"; }
die_usage() { say "$*" >&2; say "try --help" >&2; exit 64; }

# shellcheck disable=SC2317
cleanup() { if [ -n "$TMPD" ]; then rm -rf "$TMPD"; fi; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }
is_number() { printf '%s' "$1" | grep -Eq '^[0-9]+(\.[0-9]+)?$'; }
awk_true() { awk "BEGIN { exit !($1) }"; }

# nth I: the I-th instance URL (1-based).
nth() { printf '%s\n' "$INSTANCES" | tr ',' '\n' | sed -n "${1}p"; }
count_instances() { printf '%s\n' "$INSTANCES" | tr ',' '\n' | grep -c .; }

# request URL METHOD PATH [BODYFILE]: sets HTTP_STATUS and HTTP_BODY;
# returns 1 (HTTP_STATUS 000) when the instance cannot be reached.
request() {
    _u=$1
    _m=$2
    _p=$3
    _b=${4:-}
    set -- -sS -o "$TMPD/body" -w '%{http_code}' --max-time "$CURL_TIMEOUT" -X "$_m"
    if [ -n "$_b" ]; then
        set -- "$@" -H 'Content-Type: application/json' --data-binary "@$_b"
    fi
    if [ -n "$TOKEN_FILE" ] && [ "$_m" = POST ] && [ "$_p" != /infer ]; then
        set -- "$@" -H "@$TMPD/auth"
    fi
    : >"$TMPD/body"
    if ! HTTP_STATUS=$(curl "$@" "$_u$_p" 2>"$TMPD/curlerr"); then
        HTTP_STATUS=000
        HTTP_BODY=$(head -n 1 "$TMPD/curlerr")
        return 1
    fi
    HTTP_BODY=$(cat "$TMPD/body")
    return 0
}

# post URL PATH JSON: a control request, with "slot" for --slot S.
post() {
    printf '%s' "$3" | with_slot >"$TMPD/req"
    request "$1" POST "$2" "$TMPD/req"
}

# answer_error: "HTTP N code: message" of the last answer.
answer_error() {
    if [ "$HTTP_STATUS" = 000 ]; then
        printf 'unreachable (%s)' "$HTTP_BODY"
        return
    fi
    _e=$(printf '%s' "$HTTP_BODY" | jq -r '"\(.error.code): \(.error.message)"' 2>/dev/null)
    if [ -z "$_e" ] || [ "$_e" = "null: null" ]; then
        _e=$(printf '%s' "$HTTP_BODY" | head -c 200)
    fi
    printf 'HTTP %s %s' "$HTTP_STATUS" "$_e"
}

field() { printf '%s' "$HTTP_BODY" | jq -r "$1" 2>/dev/null; }
# sfield JQ: a value of the slot's state in the last GET /status body
# (.slots[S] with --slot S other than default, else the top level).
sview() { printf '%s' "$HTTP_BODY" | jq "$@" --arg s "$SLOT" 'if $s == "" then . else (.slots[$s] // error("no slot " + $s)) end' 2>/dev/null; }
sfield() { sview -c | jq -r "$1" 2>/dev/null; }
# with_slot: the JSON object on stdin, with "slot" added for --slot S.
with_slot() { jq -c --arg s "$SLOT" 'if $s == "" then . else . + {slot: $s} end'; }

# ---- the record file ----
# {"adapter", "state": "started|completed|rolled_back|failed", "instances":
#  [{"url", "before": {"adapter","version","sha256"}, "after": {..}|null}]}

# record_set JQ-FILTER [jq args...]: rewrites the record atomically. The
# filter is a jq program.
record_set() {
    _f=$1
    shift
    if ! jq "$@" "$_f" "$STATE_FILE" >"$STATE_FILE.tmp" || ! mv "$STATE_FILE.tmp" "$STATE_FILE"; then
        say "cannot update the record file $STATE_FILE" >&2
        return 1
    fi
}

# before_of I: "adapter version sha256" recorded for instance I ("null 0
# null" for the base model only); after_of I: "adapter version" or "none".
before_of() { jq -r --argjson i "$1" '.instances[$i - 1].before | "\(.adapter) \(.version) \(.sha256)"' "$STATE_FILE"; }
after_of() { jq -r --argjson i "$1" '.instances[$i - 1].after | if . then "\(.adapter) \(.version)" else "none" end' "$STATE_FILE"; }

# ---- restoring one instance ----

# restore I WANT_ADAPTER WANT_VERSION [SHA256]: makes instance I serve that
# stable again (aborting a live canary first): POST /rollback {"version"}
# while the version is in its history, else POST /swap of the adapter (with
# the recorded sha256, so only the same bytes come back, as a new version).
# Sets RESTORE_FAILED on failure.
restore() {
    _i=$1
    _wa=$2
    _wv=$3
    _wh=${4:-null}
    _u=$(nth "$_i")
    if ! request "$_u" GET /status || [ "$HTTP_STATUS" != 200 ]; then
        say "ROLLBACK FAILED on $_u: GET /status: $(answer_error)" >&2
        RESTORE_FAILED=1
        return 1
    fi
    if [ "$(sfield '.canary != null')" = true ]; then
        say "$_u: aborting the live canary $(sfield '"\(.canary.adapter) v\(.canary.version)"')"
        if ! post "$_u" /rollback '{}' || [ "$HTTP_STATUS" != 200 ]; then
            say "ROLLBACK FAILED on $_u: canary abort: $(answer_error)" >&2
            RESTORE_FAILED=1
            return 1
        fi
        request "$_u" GET /status || true
    fi
    _cur=$(sfield '"\(.stable.adapter) \(.stable.version)"')
    if [ "$_cur" = "$_wa $_wv" ]; then
        say "$_u: serves $_wa v$_wv already"
        return 0
    fi
    _inhist=$(sview -c | jq -r --argjson v "$_wv" '[.history[]?.version] | index($v) != null' 2>/dev/null)
    if [ "$_inhist" = true ]; then
        post "$_u" /rollback "{\"version\": $_wv}"
        _how="POST /rollback {\"version\": $_wv}"
    elif [ "$_wa" = null ]; then
        say "ROLLBACK FAILED on $_u: the base model (v0) is no longer in its history" >&2
        RESTORE_FAILED=1
        return 1
    else
        post "$_u" /swap "$(jq -cn --arg a "$_wa" --arg h "$_wh" \
            '{adapter: $a} + (if $h == "null" or $h == "" then {} else {sha256: $h} end)')"
        _how="POST /swap {\"adapter\": \"$_wa\"} (v$_wv no longer in history)"
    fi
    if [ "$HTTP_STATUS" != 200 ]; then
        say "ROLLBACK FAILED on $_u: $_how: $(answer_error)" >&2
        RESTORE_FAILED=1
        return 1
    fi
    say "$_u: rolled back from $(printf "%s" "$_cur" | sed "s/ / v/") to $(field '"\(.adapter) v\(.version)"') by $_how"
    return 0
}

# rollback_touched: restores every touched instance, newest first.
rollback_touched() {
    if [ -z "$TOUCHED" ]; then
        say "no instance was touched; nothing to roll back"
        return 0
    fi
    say "rolling back every touched instance:$(for _t in $TOUCHED; do printf ' %s' "$(nth "$_t")"; done)"
    for _t in $(printf '%s' "$TOUCHED" | tr ' ' '\n' | grep . | sort -rn); do
        # shellcheck disable=SC2046
        restore "$_t" $(before_of "$_t") || true
    done
}

# abort CODE REASON: rolls back what this run touched and exits.
abort() {
    _code=$1
    say "FAILED: $2" >&2
    rollback_touched
    if [ "$RESTORE_FAILED" = 1 ]; then
        record_set '.state = "failed"' || true
        say "rollout of $ADAPTER FAILED and rolling back failed on some instance; see above" >&2
        exit 4
    fi
    record_set '.state = "rolled_back"' || true
    say "rollout of $ADAPTER aborted; every touched instance serves what it served before"
    exit "$_code"
}

# shellcheck disable=SC2317
interrupted() {
    trap - INT TERM
    abort 130 "interrupted"
}

# ---- the rollout ----

# snapshot_all: checks every instance is serving with no canary, then
# records every stable in a fresh record file. An existing record of a run
# that did not finish ("started", "failed") is not overwritten.
snapshot_all() {
    if [ -r "$STATE_FILE" ]; then
        _old=$(jq -r '.state // empty' "$STATE_FILE" 2>/dev/null)
        case $_old in
        started | failed)
            say "$STATE_FILE records an unfinished rollout of $(jq -r '.adapter' "$STATE_FILE") (state $_old); check the fleet, then remove the file or pass another --state-file" >&2
            exit 2
            ;;
        esac
    fi
    : >"$TMPD/insts"
    _n=$(count_instances)
    _i=1
    while [ "$_i" -le "$_n" ]; do
        _u=$(nth "$_i")
        if ! request "$_u" GET /status; then
            say "$_u unreachable: $(answer_error)" >&2
            exit 3
        fi
        if [ "$HTTP_STATUS" != 200 ] || [ "$(sfield '.stable.version | type')" != number ]; then
            say "$_u: GET /status: $(answer_error)" >&2
            exit 3
        fi
        if [ "$(field '.state')" != serving ]; then
            say "$_u is $(field '.state'), not serving; refusing to start" >&2
            exit 2
        fi
        if [ "$(sfield '.canary != null')" = true ]; then
            say "$_u has a live canary ($(sfield '"\(.canary.adapter) v\(.canary.version)"')); promote or roll it back first" >&2
            exit 2
        fi
        sview -c | jq -c --arg u "$_u" \
            '{url: $u, before: {adapter: .stable.adapter, version: .stable.version, sha256: .stable.sha256}, after: null}' \
            >>"$TMPD/insts" || exit 3
        say "$_u: serves $(sfield '"\(.stable.adapter) v\(.stable.version)"')"
        _i=$((_i + 1))
    done
    if ! jq -s --arg a "$ADAPTER" --arg t "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        '{adapter: $a, started: $t, state: "started", instances: .}' "$TMPD/insts" \
        >"$STATE_FILE.tmp" || ! mv "$STATE_FILE.tmp" "$STATE_FILE"; then
        say "cannot write the record file $STATE_FILE" >&2
        exit 2
    fi
    say "recorded what every instance serves in $STATE_FILE"
}

# record_after I: records what instance I serves now as its "after".
record_after() {
    _u=$(nth "$1")
    if request "$_u" GET /status && [ "$HTTP_STATUS" = 200 ]; then
        sview -c | jq -c '{adapter: .stable.adapter, version: .stable.version, sha256: .stable.sha256}' >"$TMPD/after"
        record_set '.instances[$i - 1].after = $x[0]' --argjson i "$1" --slurpfile x "$TMPD/after"
    fi
}

# probe_ok URL: the probe rows, pinned to the stable, answer 200 finite.
probe_ok() {
    jq -c '{inputs: ., variant: "stable"}' "$PROBE" | with_slot >"$TMPD/probe" || return 1
    request "$1" POST /infer "$TMPD/probe" || return 1
    [ "$HTTP_STATUS" = 200 ] || return 1
    _nf=$(field '[.outputs[][] | select(. == null or (type == "number" and isinfinite))] | length')
    [ "$_nf" = 0 ]
}

# counters URL: "requests errors nonfinite" of the stable (from HTTP_BODY
# after a GET /status); empty when unreadable.
counters() {
    sfield '"\(.requests.stable.requests // 0) \(.requests.stable.errors // 0) \(.requests.stable.nonfinite_rows // 0)"'
}

# wave FIRST LAST N: swaps instances FIRST..LAST, waits, gates them.
wave() {
    _first=$1
    _last=$2
    say "wave $3: instances $_first..$_last of $(count_instances)"
    _body=$(jq -cn --arg a "$ADAPTER" --arg h "$SHA256" \
        '{adapter: $a} + (if $h == "" then {} else {sha256: $h} end)')
    _i=$_first
    while [ "$_i" -le "$_last" ]; do
        _u=$(nth "$_i")
        request "$_u" GET /status || abort 3 "$_u unreachable: $(answer_error)"
        counters >"$TMPD/c0.$_i"
        TOUCHED="$TOUCHED $_i"
        if ! post "$_u" /swap "$_body"; then
            abort 3 "$_u: POST /swap unreachable: $(answer_error)"
        fi
        if [ "$HTTP_STATUS" != 200 ]; then
            abort 2 "$_u: POST /swap refused: $(answer_error)"
        fi
        say "$_u: swapped: $(field '"\(.adapter) v\(.version) stable (generation \(.generation), staged in \(.stage_ms) ms)"')"
        _i=$((_i + 1))
    done
    sleep "$WAVE_INTERVAL"
    _i=$_first
    while [ "$_i" -le "$_last" ]; do
        _u=$(nth "$_i")
        request "$_u" GET /status || abort 3 "$_u unreachable: $(answer_error)"
        [ "$HTTP_STATUS" = 200 ] || abort 3 "$_u: GET /status: $(answer_error)"
        _now=$(sfield '"\(.stable.adapter)"')
        [ "$_now" = "$ADAPTER" ] || abort 2 "$_u now serves $_now; someone else changed it"
        # shellcheck disable=SC2046
        set -- $(cat "$TMPD/c0.$_i") $(counters)
        [ $# -eq 6 ] || abort 3 "$_u: unreadable counters in /status"
        _r=$(($4 - $1))
        _e=$(($5 - $2))
        _nf=$(($6 - $3))
        _line="$_u: gate: requests=$_r errors=$_e nonfinite=$_nf over ${WAVE_INTERVAL}s"
        awk_true "$_nf <= $MAX_NONFINITE" ||
            abort 1 "$_line: nonfinite rows $_nf > --max-nonfinite $MAX_NONFINITE"
        if awk_true "$_r > 0 && $_e / $_r > $MAX_ERROR_RATE"; then
            abort 1 "$_line: error rate $_e/$_r > --max-error-rate $MAX_ERROR_RATE"
        fi
        if ! request "$_u" GET /readyz || [ "$HTTP_STATUS" != 200 ]; then
            abort 1 "$_line: /readyz answered $(answer_error)"
        fi
        if [ -n "$PROBE" ] && ! probe_ok "$_u"; then
            abort 1 "$_line: probe rows: $(answer_error | head -c 200)"
        fi
        say "$_line ok"
        record_after "$_i" || true
        _i=$((_i + 1))
    done
}

rollout() {
    trap interrupted INT TERM
    snapshot_all
    _n=$(count_instances)
    say "rollout of $ADAPTER to $_n instances: canary $(nth 1), then waves of $WAVE_SIZE"

    _rc=0
    TOUCHED=1
    (run_canary) || _rc=$?
    case $_rc in
    0) say "canary: promoted on $(nth 1)" ;;
    1) abort 1 "canary gate failed on $(nth 1)" ;;
    2) abort 2 "canary: $(nth 1) refused a request" ;;
    *) abort 3 "canary: canary-rollout.sh exited $_rc" ;;
    esac
    request "$(nth 1)" GET /status || abort 3 "$(nth 1) unreachable"
    [ "$(sfield '.stable.adapter')" = "$ADAPTER" ] ||
        abort 2 "$(nth 1) serves $(sfield '.stable.adapter') after the canary, not $ADAPTER"
    record_after 1 || true

    _w=0
    _i=2
    while [ "$_i" -le "$_n" ]; do
        _w=$((_w + 1))
        _l=$((_i + WAVE_SIZE - 1))
        [ "$_l" -le "$_n" ] || _l=$_n
        wave "$_i" "$_l" "$_w"
        _i=$((_l + 1))
    done
    record_set '.state = "completed" | .finished = $t' --arg t "$(date -u +%Y-%m-%dT%H:%M:%SZ)" || true
    say "rollout of $ADAPTER complete: every instance serves it$(jq -r '[.instances[] | " \(.url)=v\(.after.version)"] | join(",")' "$STATE_FILE")"
    exit 0
}

# run_canary: canary-rollout.sh with its output indented; exits with
# its exit status (run in a subshell).
run_canary() {
    _u=$(nth 1)
    set -- --url "$_u" --adapter "$ADAPTER" --interval "$INTERVAL" \
        --max-nonfinite "$MAX_NONFINITE" --max-error-rate "$MAX_ERROR_RATE"
    [ -z "$STEPS" ] || set -- "$@" --steps "$STEPS"
    [ -z "$MAX_P99_RATIO" ] || set -- "$@" --max-p99-ratio "$MAX_P99_RATIO"
    [ -z "$MIN_REQUESTS" ] || set -- "$@" --min-requests "$MIN_REQUESTS"
    [ -z "$PROBE" ] || set -- "$@" --probe "$PROBE"
    [ -z "$SHA256" ] || set -- "$@" --sha256 "$SHA256"
    [ -z "$TOKEN_FILE" ] || set -- "$@" --token-file "$TOKEN_FILE"
    [ -z "$SLOT" ] || set -- "$@" --slot "$SLOT"
    say "canary: $_u: $CANARY_SCRIPT"
    { "$CANARY_SCRIPT" "$@" 2>&1; echo "$?" >"$TMPD/canary.rc"; } | sed 's/^/    /'
    exit "$(cat "$TMPD/canary.rc")"
}

# ---- --rollback ----

undo() {
    if [ -z "$STATE_FILE" ] && [ -z "$INSTANCES" ]; then
        STATE_FILE=./fleet-rollout.json
    fi
    if [ -n "$STATE_FILE" ] && [ ! -r "$STATE_FILE" ]; then
        die_usage "--state-file: cannot read $STATE_FILE"
    fi
    if [ -n "$STATE_FILE" ]; then
        jq -e '.instances | type == "array"' "$STATE_FILE" >/dev/null 2>&1 ||
            die_usage "--state-file: $STATE_FILE is not a fleet-rollout record"
        ADAPTER=$(jq -r '.adapter' "$STATE_FILE")
        _st=$(jq -r '.state' "$STATE_FILE")
        INSTANCES=$(jq -r '[.instances[].url] | join(",")' "$STATE_FILE")
        if [ "$_st" = rolled_back ]; then
            say "the rollout of $ADAPTER recorded in $STATE_FILE was already rolled back; nothing to do"
            exit 0
        fi
        if [ "$(jq '[.instances[] | select(.after != null)] | length' "$STATE_FILE")" = 0 ]; then
            say "the rollout of $ADAPTER recorded in $STATE_FILE (state $_st) completed on no instance; nothing to undo"
            exit 0
        fi
        say "undoing the rollout of $ADAPTER recorded in $STATE_FILE (state $_st)"
        _n=$(count_instances)
        _i=$_n
        while [ "$_i" -ge 1 ]; do
            _u=$(nth "$_i")
            _after=$(after_of "$_i")
            if [ "$_after" = none ]; then
                say "$_u: the rollout never completed here; nothing to undo"
            elif ! request "$_u" GET /status || [ "$HTTP_STATUS" != 200 ]; then
                say "ROLLBACK FAILED on $_u: GET /status: $(answer_error)" >&2
                RESTORE_FAILED=1
            elif [ "$(sfield '"\(.stable.adapter) \(.stable.version)"')" != "$_after" ]; then
                say "ROLLBACK REFUSED on $_u: it serves $(sfield '"\(.stable.adapter) v\(.stable.version)"'), not $(printf '%s' "$_after" | sed 's/ / v/') from this rollout; leaving it" >&2
                RESTORE_FAILED=1
            else
                # shellcheck disable=SC2046
                restore "$_i" $(before_of "$_i") || true
            fi
            _i=$((_i - 1))
        done
        if [ "$RESTORE_FAILED" = 1 ]; then
            say "undo incomplete; see above" >&2
            exit 4
        fi
        record_set '.state = "rolled_back"' || true
        say "undo complete: every instance serves what it served before the rollout"
        exit 0
    fi
    if [ -z "$INSTANCES" ] || [ -z "$ADAPTER" ]; then
        die_usage "--rollback needs --state-file FILE (a readable record) or --instances and --adapter"
    fi
    say "no record file: rolling every instance that serves $ADAPTER back one step"
    _n=$(count_instances)
    _i=$_n
    while [ "$_i" -ge 1 ]; do
        _u=$(nth "$_i")
        if ! request "$_u" GET /status || [ "$HTTP_STATUS" != 200 ]; then
            say "ROLLBACK FAILED on $_u: GET /status: $(answer_error)" >&2
            RESTORE_FAILED=1
        elif [ "$(sfield '.canary != null')" = true ]; then
            say "ROLLBACK REFUSED on $_u: a canary is live; handle it first" >&2
            RESTORE_FAILED=1
        elif [ "$(sfield '.stable.adapter')" != "$ADAPTER" ]; then
            say "$_u: serves $(sfield '"\(.stable.adapter) v\(.stable.version)"'), not $ADAPTER; leaving it"
        elif ! post "$_u" /rollback '{}' || [ "$HTTP_STATUS" != 200 ]; then
            say "ROLLBACK FAILED on $_u: POST /rollback: $(answer_error)" >&2
            RESTORE_FAILED=1
        else
            say "$_u: rolled back one step: $(field '"\(.previous.adapter) v\(.previous.version) -> \(.adapter) v\(.version)"')"
        fi
        _i=$((_i - 1))
    done
    [ "$RESTORE_FAILED" = 0 ] || exit 4
    exit 0
}

# ---- etcd mode (SPEC.md 12): the fleet converges to desired/<slot> ----
#
# Every instance runs lorad-sync, which converges it to PREFIX/desired/SLOT
# and reports it in PREFIX/instances/NAME. This mode never talks to an
# instance: it writes desired/SLOT (each write a compare-and-swap on the
# key's mod_revision through /v3/kv/txn, so a concurrent writer makes it
# fail loudly instead of being overwritten) and reads instances/*.

ETCD_BODY=""
E_VAL=""
E_MOD=0

# etcd_call PATH BODYFILE: POSTs to the first endpoint that answers 200;
# ETCD_BODY its answer. When none does, it says so and retries every
# second for up to --converge-timeout seconds (an etcd outage or leader
# election); 1 when none answered by then.
etcd_call() {
    _et0=$(date +%s)
    while ! etcd_call_once "$1" "$2"; do
        if [ $(($(date +%s) - _et0)) -ge "$CONVERGE_TIMEOUT" ]; then
            say "etcd unreachable for ${CONVERGE_TIMEOUT}s; giving up" >&2
            return 1
        fi
        say "etcd unreachable; retrying in 1s" >&2
        sleep 1
    done
}

etcd_call_once() {
    _path=$1
    _file=$2
    for _ep in $(printf '%s' "$ETCD" | tr ',' ' '); do
        set -- -sS -o "$TMPD/ebody" -w '%{http_code}' --max-time 10 -X POST \
            -H 'Content-Type: application/json' --data-binary "@$_file"
        [ -z "$ETCD_CACERT" ] || set -- "$@" --cacert "$ETCD_CACERT"
        [ -z "$ETCD_CERT" ] || set -- "$@" --cert "$ETCD_CERT" --key "$ETCD_KEY"
        : >"$TMPD/ebody"
        _st=$(curl "$@" "$_ep$_path" 2>"$TMPD/ecurlerr") || _st=000
        if [ "$_st" = 200 ]; then
            ETCD_BODY=$(cat "$TMPD/ebody")
            return 0
        fi
        if [ "$_st" = 000 ]; then
            say "etcd $_ep$_path: $(head -n 1 "$TMPD/ecurlerr")" >&2
        else
            say "etcd $_ep$_path: HTTP $_st $(head -c 200 "$TMPD/ebody")" >&2
        fi
    done
    return 1
}

b64() { printf '%s' "$1" | base64 | tr -d '\n'; }

# e_get KEY: E_VAL its value ("" when absent), E_MOD its mod_revision (0).
e_get() {
    jq -cn --arg k "$(b64 "$1")" '{key: $k}' >"$TMPD/ereq"
    etcd_call /v3/kv/range "$TMPD/ereq" || return 1
    E_MOD=$(printf '%s' "$ETCD_BODY" | jq -r '.kvs[0].mod_revision // "0"')
    E_VAL=$(printf '%s' "$ETCD_BODY" | jq -r '.kvs[0].value // empty | @base64d')
}

# e_cas KEY VALUE MOD: puts KEY=VALUE only if its mod_revision is still MOD
# (0: only if absent). 0 written (E_MOD the new revision), 1 the key
# changed meanwhile (E_VAL/E_MOD: what is there now), 2 etcd unreachable.
e_cas() {
    jq -cn --arg k "$(b64 "$1")" --arg v "$(b64 "$2")" --arg m "$3" \
        '{compare: [{key: $k, target: "MOD", result: "EQUAL", mod_revision: $m}],
          success: [{request_put: {key: $k, value: $v}}],
          failure: [{request_range: {key: $k}}]}' >"$TMPD/ereq"
    etcd_call /v3/kv/txn "$TMPD/ereq" || return 2
    if [ "$(printf '%s' "$ETCD_BODY" | jq -r '.succeeded // false')" = true ]; then
        E_MOD=$(printf '%s' "$ETCD_BODY" | jq -r '.header.revision')
        return 0
    fi
    E_MOD=$(printf '%s' "$ETCD_BODY" | jq -r '.responses[0].response_range.kvs[0].mod_revision // "0"')
    E_VAL=$(printf '%s' "$ETCD_BODY" | jq -r '.responses[0].response_range.kvs[0].value // empty | @base64d')
    return 1
}

# e_reports: every instance's report, as a JSON array, into $TMPD/reports.
e_reports() {
    jq -cn --arg k "$(b64 "${PREFIX}instances/")" --arg e "$(b64 "${PREFIX}instances0")" \
        '{key: $k, range_end: $e}' >"$TMPD/ereq"
    etcd_call /v3/kv/range "$TMPD/ereq" || return 1
    printf '%s' "$ETCD_BODY" | jq -c '[.kvs[]? | .value | @base64d | fromjson? // empty]' >"$TMPD/reports"
}

# report_q JQ [args]: JQ over the reports of the instances in the gate set
# ($names), each as $r with $x its slot.
report_q() {
    _q=$1
    shift
    jq -r --arg s "$ESLOT" --argjson names "$NAMES" "$@" \
        "[.[] | select(.name as \$n | \$names | index(\$n))] | $_q" "$TMPD/reports"
}

# write_desired VALUE WHAT: the compare-and-swap write of desired/SLOT;
# exits 5 (loudly) when another writer changed the key since this run read
# or wrote it, 3 when etcd is unreachable.
write_desired() {
    _rc=0
    e_cas "$DKEY" "$1" "$CUR_MOD" || _rc=$?
    case $_rc in
    0) CUR_MOD=$E_MOD
        say "wrote $DKEY = $1 ($2, revision $CUR_MOD)" ;;
    1) say "CONFLICT: $DKEY changed since this rollout read it (now $E_VAL at revision $E_MOD, expected revision $CUR_MOD): another writer is rolling this slot out; not overwriting it, not rolling back" >&2
        exit 5 ;;
    *) say "etcd unreachable: cannot write $DKEY ($2)" >&2
        [ "$2" = "rollback" ] && exit 4
        return 3 ;;
    esac
}

# wait_converged KIND [PERCENT]: waits (--converge-timeout) until every
# instance of the gate set reports the slot converged to the value written
# at CUR_MOD: KIND canary (A the canary at PERCENT, or already A's stable),
# stable (A stable, no canary), or previous (the previous value). Returns 0,
# 1 when an instance refused it (its code printed), 2 on timeout.
wait_converged() {
    _kind=$1
    _pct=${2:-0}
    case $_kind in
    previous) _want=$PREV_ADAPTER ;;
    *) _want=$ADAPTER ;;
    esac
    _t0=$(date +%s)
    while :; do
        if e_reports; then
            # instances whose report expired left the gate set; they
            # converge by themselves when they come back
            _gone=$(report_q 'map(.name)' | jq -r --argjson names "$NAMES" '$names - . | .[]')
            for _g in $_gone; do
                say "instance $_g no longer reports (its lease expired): it will converge by itself when it is back"
                NAMES=$(printf '%s' "$NAMES" | jq -c --arg g "$_g" '. - [$g]')
            done
            [ "$NAMES" != "[]" ] || { say "no instance reports any more" >&2; return 2; }
            _newer=$(report_q '[.[] | .slots[$s].desired.mod_revision // 0 | select(. > ($m | tonumber))] | length' --arg m "$CUR_MOD")
            if [ "$_newer" != 0 ]; then
                e_get "$DKEY" || true
                say "CONFLICT: $DKEY was changed by another writer (now $E_VAL at revision $E_MOD, this rollout wrote revision $CUR_MOD); the instances follow it; not overwriting it, not rolling back" >&2
                exit 5
            fi
            _ref=$(report_q '[.[] | .slots[$s] as $x | select($x.desired.mod_revision == ($m | tonumber) and $x.last_error != null) | "\(.name): \($x.last_error.code): \($x.last_error.message)"] | .[]' --arg m "$CUR_MOD")
            if [ -n "$_ref" ]; then
                printf '%s\n' "$_ref" | while IFS= read -r _l; do say "REFUSED by $_l" >&2; done
                return 1
            fi
            _left=$(report_q '[.[] | .slots[$s] as $x | select(
                ($x == null) or ($x.desired.mod_revision != ($m | tonumber)) or (
                  if $k == "canary" then
                    (($x.canary != null and $x.canary.adapter == $a and ((($x.canary.percent - ($p | tonumber)) | fabs) < 0.005))
                     or ($x.canary == null and $x.stable.adapter == $a)) | not
                  else
                    ($x.canary == null and $x.stable.adapter == $a) | not
                  end)) | .name] | join(",")' \
                --arg m "$CUR_MOD" --arg k "$_kind" --arg a "$_want" --arg p "$_pct")
            [ -n "$_left" ] || return 0
        fi
        if [ $(($(date +%s) - _t0)) -ge "$CONVERGE_TIMEOUT" ]; then
            say "timeout: after ${CONVERGE_TIMEOUT}s still not converged: ${_left:-etcd unreachable}" >&2
            return 2
        fi
        sleep 0.2
    done
}

# e_rollback CODE REASON: writes the previous desired value back (CAS),
# waits for every instance to serve it again, exits CODE.
e_rollback() {
    say "FAILED: $2" >&2
    say "rolling back: writing the previous value of $DKEY back"
    write_desired "$PREV_VALUE" rollback || exit 4
    if ! wait_converged previous; then
        say "ROLLBACK INCOMPLETE: not every instance reports $PREV_ADAPTER again; see above" >&2
        exit 4
    fi
    say "rolled back: every instance serves $PREV_ADAPTER in slot $ESLOT again"
    exit "$1"
}

# evidence: "name requests errors nonfinite canary_p99 stable_p99 seq" per
# instance of the gate set, from the reports.
evidence() {
    report_q '.[] | .slots[$s] as $x | "\(.name) \($x.requests.canary.requests // 0) \($x.requests.canary.errors // 0) \($x.requests.canary.nonfinite_rows // 0) \($x.requests.canary.p99_ms // "null") \($x.requests.stable.p99_ms // "null") \(.seq // 0)"'
}

# gate: evidence over --interval seconds from every instance of the gate
# set (the canary's counters in each report), the same gates as the push
# mode's canary: non-finite rows, error rate, p99 ratio.
gate() {
    e_reports || e_rollback 3 "etcd unreachable while gating"
    evidence >"$TMPD/ev0"
    sleep "$INTERVAL"
    # fresh reports: every instance wrote one after the interval began
    _t0=$(date +%s)
    while :; do
        e_reports || e_rollback 3 "etcd unreachable while gating"
        evidence >"$TMPD/ev1"
        _stale=$(awk 'NR == FNR { seq[$1] = $7; next } ($1 in seq) && $7 <= seq[$1] { print $1 }' "$TMPD/ev0" "$TMPD/ev1")
        [ -n "$_stale" ] || break
        [ $(($(date +%s) - _t0)) -lt "$CONVERGE_TIMEOUT" ] ||
            e_rollback 3 "no fresh report from $_stale"
        sleep 0.2
    done
    while read -r _n _r _e _nf _p99c _p99s _seq; do
        _b=$(awk -v n="$_n" '$1 == n { print $2, $3, $4 }' "$TMPD/ev0")
        [ -n "$_b" ] || continue
        # shellcheck disable=SC2086
        set -- $_b
        _dr=$((_r - $1))
        _de=$((_e - $2))
        _dn=$((_nf - $3))
        _line="$_n: canary at ${CUR_PCT}%: requests=$_dr errors=$_de nonfinite=$_dn p99 canary=${_p99c}ms stable=${_p99s}ms over ${INTERVAL}s"
        awk_true "$_dn <= $MAX_NONFINITE" ||
            e_rollback 1 "gate failed: $_line: nonfinite rows $_dn > --max-nonfinite $MAX_NONFINITE"
        if awk_true "$_dr > 0 && $_de / $_dr > $MAX_ERROR_RATE"; then
            e_rollback 1 "gate failed: $_line: error rate $_de/$_dr > --max-error-rate $MAX_ERROR_RATE"
        fi
        if [ -n "$MAX_P99_RATIO" ] && [ "$_p99c" != null ] && [ "$_p99s" != null ] &&
            awk_true "$_dr >= ${MIN_REQUESTS:-100} && $_p99c > $MAX_P99_RATIO * $_p99s"; then
            e_rollback 1 "gate failed: $_line: p99 ratio > --max-p99-ratio $MAX_P99_RATIO"
        fi
        say "$_line ok"
    done <"$TMPD/ev1"
}

etcd_rollout() {
    trap 'trap - INT TERM; e_rollback 130 interrupted' INT TERM
    ESLOT=${SLOT:-default}
    DKEY="${PREFIX}desired/$ESLOT"
    e_get "$DKEY" || { say "etcd unreachable: $ETCD" >&2; exit 3; }
    CUR_MOD=$E_MOD
    e_reports || { say "etcd unreachable: $ETCD" >&2; exit 3; }
    NAMES=$(jq -c --arg s "$ESLOT" '[.[] | select(.slots[$s] != null) | .name]' "$TMPD/reports")
    if [ "$NAMES" = "[]" ]; then
        say "no instance reports slot $ESLOT under ${PREFIX}instances/; are the lorad-sync agents running?" >&2
        exit 2
    fi
    say "instances reporting slot $ESLOT: $(printf '%s' "$NAMES" | jq -r 'join(", ")')"
    _busy=$(report_q '[.[] | select(.slots[$s].canary != null) | "\(.name) (\(.slots[$s].canary.adapter) at \(.slots[$s].canary.percent)%)"] | join(", ")')
    if [ -n "$_busy" ]; then
        say "a canary is live in slot $ESLOT on $_busy; finish that rollout first" >&2
        exit 2
    fi
    if [ "$CUR_MOD" != 0 ]; then
        PREV_VALUE=$E_VAL
        PREV_ADAPTER=$(printf '%s' "$E_VAL" | jq -r '.adapter // empty' 2>/dev/null)
        if [ -z "$PREV_ADAPTER" ] || [ "$(printf '%s' "$E_VAL" | jq -r '.canary_percent // "none"')" != none ]; then
            say "$DKEY is $E_VAL: not a finished rollout; promote or roll it back first" >&2
            exit 2
        fi
        say "$DKEY is $PREV_VALUE (revision $CUR_MOD)"
    else
        # No desired value yet: the previous value is what every instance
        # serves (they must agree), so a rollback has something to write.
        _st=$(report_q '[.[] | .slots[$s].stable | {adapter, sha256}] | unique')
        if [ "$(printf '%s' "$_st" | jq 'length')" != 1 ] || [ "$(printf '%s' "$_st" | jq -r '.[0].adapter')" = null ]; then
            say "$DKEY does not exist and the instances do not all serve one adapter ($_st); write $DKEY first" >&2
            exit 2
        fi
        PREV_VALUE=$(printf '%s' "$_st" | jq -c '.[0] | {adapter} + (if .sha256 then {sha256} else {} end)')
        PREV_ADAPTER=$(printf '%s' "$_st" | jq -r '.[0].adapter')
        say "$DKEY does not exist; every instance serves $PREV_VALUE, the value a rollback writes"
    fi
    [ -n "$STEPS" ] || STEPS="1,5,25,50,100"
    for CUR_PCT in $(printf '%s' "$STEPS" | tr ',' ' '); do
        _v=$(jq -cn --arg a "$ADAPTER" --arg h "$SHA256" --argjson p "$CUR_PCT" \
            '{adapter: $a, canary_percent: $p} + (if $h == "" then {} else {sha256: $h} end)')
        write_desired "$_v" "canary at $CUR_PCT%" || e_rollback 3 "etcd unreachable"
        _rc=0
        wait_converged canary "$CUR_PCT" || _rc=$?
        case $_rc in
        0) say "every instance serves $ADAPTER as the canary at $CUR_PCT% in slot $ESLOT" ;;
        1) e_rollback 2 "an instance refused $ADAPTER" ;;
        *) e_rollback 3 "the fleet did not converge to the canary at $CUR_PCT%" ;;
        esac
        gate
    done
    _v=$(jq -cn --arg a "$ADAPTER" --arg h "$SHA256" '{adapter: $a} + (if $h == "" then {} else {sha256: $h} end)')
    write_desired "$_v" "promote" || e_rollback 3 "etcd unreachable"
    _rc=0
    wait_converged stable || _rc=$?
    case $_rc in
    0) ;;
    1) e_rollback 2 "an instance refused to promote $ADAPTER" ;;
    *) e_rollback 3 "the fleet did not converge to $ADAPTER" ;;
    esac
    say "rollout of $ADAPTER complete: $DKEY = $_v; every instance serves it: $(report_q '[.[] | "\(.name)=v\(.slots[$s].stable.version)"] | join(", ")')"
    exit 0
}

# ---- arguments ----

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        --help | -h) usage; exit 0 ;;
        --rollback) ROLLBACK=1; shift ;;
        --instances | --adapter | --wave-size | --wave-interval | --state-file | --token-file | \
            --canary-script | --steps | --interval | --max-nonfinite | --max-error-rate | \
            --max-p99-ratio | --min-requests | --probe | --sha256 | --slot | --etcd | --prefix | \
            --converge-timeout | --etcd-cacert | --etcd-cert | --etcd-key)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            _v=$2
            case $1 in
            --instances) INSTANCES=$_v ;;
            --adapter) ADAPTER=$_v ;;
            --wave-size) WAVE_SIZE=$_v ;;
            --wave-interval) WAVE_INTERVAL=$_v ;;
            --state-file) STATE_FILE=$_v ;;
            --token-file) TOKEN_FILE=$_v ;;
            --canary-script) CANARY_SCRIPT=$_v ;;
            --steps) STEPS=$_v ;;
            --interval) INTERVAL=$_v ;;
            --max-nonfinite) MAX_NONFINITE=$_v ;;
            --max-error-rate) MAX_ERROR_RATE=$_v ;;
            --max-p99-ratio) MAX_P99_RATIO=$_v ;;
            --min-requests) MIN_REQUESTS=$_v ;;
            --probe) PROBE=$_v ;;
            --sha256) SHA256=$_v ;;
            --slot) SLOT=$_v ;;
            --etcd) ETCD=$_v ;;
            --prefix) PREFIX=$_v ;;
            --converge-timeout) CONVERGE_TIMEOUT=$_v ;;
            --etcd-cacert) ETCD_CACERT=$_v ;;
            --etcd-cert) ETCD_CERT=$_v ;;
            --etcd-key) ETCD_KEY=$_v ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown argument: $1" ;;
        esac
    done
}

check_args() {
    for _t in curl jq awk sed; do
        command -v "$_t" >/dev/null 2>&1 || die_usage "$_t is required"
    done
    if [ -n "$SLOT" ]; then
        printf '%s' "$SLOT" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' ||
            die_usage "--slot: not a valid slot name: $SLOT"
        [ "$SLOT" != default ] || [ -n "$ETCD" ] || SLOT=""
    fi
    if [ -n "$ETCD" ]; then
        check_etcd_args
        return 0
    fi
    [ -z "$PREFIX" ] || die_usage "--prefix goes with --etcd"
    if [ -n "$INSTANCES" ]; then
        # URLs without a trailing slash, no empty entries.
        INSTANCES=$(printf '%s\n' "$INSTANCES" | tr ',' '\n' | sed 's:/*$::' | grep . | paste -sd, -)
        for _u in $(printf '%s' "$INSTANCES" | tr ',' ' '); do
            printf '%s' "$_u" | grep -Eq '^https?://[^/[:space:]]+$' ||
                die_usage "--instances: not a base URL: $_u"
        done
        [ "$(printf '%s\n' "$INSTANCES" | tr ',' '\n' | sort | uniq -d)" = "" ] ||
            die_usage "--instances: an instance is listed twice"
    fi
    if [ -n "$ADAPTER" ]; then
        printf '%s' "$ADAPTER" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' ||
            die_usage "--adapter: not a valid adapter name: $ADAPTER"
    fi
    if [ -n "$TOKEN_FILE" ] && [ ! -r "$TOKEN_FILE" ]; then
        die_usage "--token-file: cannot read $TOKEN_FILE"
    fi
    [ "$ROLLBACK" = 1 ] && return 0
    [ -n "$INSTANCES" ] || die_usage "--instances is required"
    [ -n "$ADAPTER" ] || die_usage "--adapter is required"
    { is_uint "$WAVE_SIZE" && [ "$WAVE_SIZE" -ge 1 ]; } || die_usage "--wave-size: not a positive count: $WAVE_SIZE"
    is_number "$INTERVAL" || die_usage "--interval: not a number of seconds: $INTERVAL"
    [ -n "$WAVE_INTERVAL" ] || WAVE_INTERVAL=$INTERVAL
    is_number "$WAVE_INTERVAL" || die_usage "--wave-interval: not a number of seconds: $WAVE_INTERVAL"
    is_uint "$MAX_NONFINITE" || die_usage "--max-nonfinite: not a count: $MAX_NONFINITE"
    is_number "$MAX_ERROR_RATE" || die_usage "--max-error-rate: not a number: $MAX_ERROR_RATE"
    if [ -n "$PROBE" ]; then
        jq -e 'type == "array" and length > 0 and all(.[]; type == "array")' "$PROBE" \
            >/dev/null 2>&1 || die_usage "--probe: $PROBE is not a JSON array of rows"
    fi
    [ -n "$STATE_FILE" ] || STATE_FILE=./fleet-rollout.json
    if [ -z "$CANARY_SCRIPT" ]; then
        # next to this one: canary-rollout.sh in the source tree,
        # lorad-canary-rollout where `make install` put both
        CANARY_SCRIPT=$(dirname "$0")/canary-rollout.sh
        [ -x "$CANARY_SCRIPT" ] || CANARY_SCRIPT=$(dirname "$0")/lorad-canary-rollout
    fi
    [ -x "$CANARY_SCRIPT" ] || die_usage "--canary-script: not executable: $CANARY_SCRIPT"
}

# The etcd mode's arguments.
check_etcd_args() {
    command -v base64 >/dev/null 2>&1 || die_usage "base64 is required"
    for _e in $(printf '%s' "$ETCD" | tr ',' ' '); do
        printf '%s' "$_e" | grep -Eq '^https?://[^/[:space:]]+$' ||
            die_usage "--etcd: not an endpoint URL: $_e"
    done
    [ -z "$INSTANCES" ] || die_usage "--etcd and --instances exclude each other: the instances report themselves in etcd"
    [ "$ROLLBACK" = 0 ] || die_usage "--rollback is the push mode's; in etcd mode write the previous value (a rollout of the previous adapter)"
    [ -z "$PROBE" ] || die_usage "--probe is the push mode's: in etcd mode the evidence comes from the instances' reports"
    [ -n "$PREFIX" ] || die_usage "--prefix is required with --etcd"
    case $PREFIX in */) ;; *) PREFIX="$PREFIX/" ;; esac
    [ -n "$ADAPTER" ] || die_usage "--adapter is required"
    is_number "$INTERVAL" || die_usage "--interval: not a number of seconds: $INTERVAL"
    is_uint "$MAX_NONFINITE" || die_usage "--max-nonfinite: not a count: $MAX_NONFINITE"
    is_number "$MAX_ERROR_RATE" || die_usage "--max-error-rate: not a number: $MAX_ERROR_RATE"
    is_uint "$CONVERGE_TIMEOUT" || die_usage "--converge-timeout: not a number of seconds: $CONVERGE_TIMEOUT"
    if [ -n "$STEPS" ]; then
        printf '%s' "$STEPS" | grep -Eq '^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$' ||
            die_usage "--steps: not a list of percentages: $STEPS"
        for _p in $(printf '%s' "$STEPS" | tr ',' ' '); do
            awk_true "$_p <= 100" || die_usage "--steps: $_p is above 100"
        done
    fi
    if [ -n "$SHA256" ]; then
        printf '%s' "$SHA256" | grep -Eq '^[0-9A-Fa-f]{64}$' || die_usage "--sha256: not 64 hex digits"
    fi
    if { [ -n "$ETCD_CERT" ] && [ -z "$ETCD_KEY" ]; } || { [ -z "$ETCD_CERT" ] && [ -n "$ETCD_KEY" ]; }; then
        die_usage "--etcd-cert and --etcd-key go together"
    fi
}

main() {
    parse_args "$@"
    check_args
    TMPD=$(mktemp -d "${TMPDIR:-/tmp}/fleet-rollout.XXXXXX") || exit 3
    trap cleanup EXIT
    if [ -n "$TOKEN_FILE" ]; then
        # Through a file so the token never shows in ps.
        printf 'Authorization: Bearer %s\n' "$(tr -d '\r\n' <"$TOKEN_FILE")" >"$TMPD/auth"
    fi
    if [ -n "$ETCD" ]; then
        etcd_rollout
    fi
    if [ "$ROLLBACK" = 1 ]; then
        undo
    fi
    rollout
}

main "$@"
