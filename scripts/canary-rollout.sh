#!/bin/sh
# lorad — scripts/canary-rollout.sh: rolls an adapter out through canary
# steps with evidence gates, then promotes it, or rolls it back.
#
# POST /swap puts the adapter on the canary at the first step; each later
# step is POST /canary. After every step it waits --interval seconds, reads
# GET /status and gates the canary's evidence against the stable's (SPEC.md
# 6 "requests"): non-finite rows, error rate (answers >= 500), p99 latency
# ratio (only once both sides have --min-requests requests), and with
# --probe the canary must answer the probe rows with 200 and finite values.
# A failed gate rolls back (POST /rollback {} aborts the canary) and exits 1.
# After the last step (normally 100) it promotes (POST /promote {}).
#
# With --slot S (S not "default") every request carries "slot": S and the
# evidence is read from /status .slots[S]; without it (or with "default")
# the requests and the evidence are exactly those of a lorad without slots.
# The control plane is --url or --socket; the probe goes to /infer on
# --infer-url / --infer-socket when the data plane listens elsewhere
# (control_listen set), else to the control address.
#
# Exit: 0 promoted, 1 a gate failed (canary rolled back), 2 the daemon
# refused a request (its error is printed), 3 daemon unreachable or an
# unreadable answer, 64 usage. Needs POSIX sh, curl and jq.
set -u

PROG=canary-rollout
URL=""
SOCKET=""
INFER_URL=""
INFER_SOCKET=""
SLOT=""
ADAPTER=""
STEPS="1,5,25,50,100"
INTERVAL=30
MAX_NONFINITE=0
MAX_P99_RATIO=2.0
MAX_ERROR_RATE=0.01
MIN_REQUESTS=100
TOKEN_FILE=""
PROBE=""
SHA256=""
CURL_TIMEOUT=${CANARY_CURL_TIMEOUT:-60}

TMPD=""
HTTP_STATUS=""
HTTP_BODY=""
CANARY_LIVE=0
CANARY_VERSION=""

usage() {
    cat <<'EOF'
usage: canary-rollout.sh (--url URL | --socket PATH) --adapter NAME [options]

Swaps NAME in as a canary on the lorad daemon at URL, raises its traffic
share step by step while gating on live evidence, and promotes it after the
last step; on a failed gate it rolls the canary back.

  --url URL             control-plane base URL, e.g. http://127.0.0.1:8080
  --socket PATH         control-plane unix socket (control_listen "unix:PATH")
  --slot S              act on slot S alone (default: the default slot)
  --infer-url URL       data-plane base URL for the probe's /infer (default:
                        the control address; needed when control_listen is set)
  --infer-socket PATH   data-plane unix socket for the probe's /infer
  --adapter NAME        adapter name under the daemon's adapter_dir
  --steps LIST          canary percentages, comma separated, increasing
                        (default 1,5,25,50,100; the last one is promoted)
  --interval S          seconds to collect evidence at each step (default 30)
  --max-nonfinite N     canary rows with non-finite output allowed (default 0)
  --max-error-rate R    canary share of answers >= 500 allowed (default 0.01)
  --max-p99-ratio X     canary p99 <= X * stable p99 (default 2.0)
  --min-requests N      requests each side needs before the latency gate
                        applies (default 100)
  --token-file F        bearer token for control requests (trailing newline
                        ignored)
  --probe FILE          JSON array of input rows; each step sends them pinned
                        to the canary and to the stable; the canary must
                        answer 200 with finite values only
  --sha256 HEX          expected sha256 of adapter_model.safetensors
  --help                this text

exit status: 0 promoted, 1 gate failed and rolled back, 2 daemon refused a
request, 3 daemon unreachable, 64 usage error
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
die_usage() { say "$*" >&2; say "try --help" >&2; exit 64; }

# Trap handlers (shellcheck cannot see trap calls: SC2317).
# shellcheck disable=SC2317
cleanup() { if [ -n "$TMPD" ]; then rm -rf "$TMPD"; fi; }

# is_uint S / is_number S: argument checks.
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }
is_number() {
    printf '%s' "$1" | grep -Eq '^[0-9]+(\.[0-9]+)?$'
}

# awk_true EXPR: exits 0 when the awk expression is true (float compares).
awk_true() { awk "BEGIN { exit !($1) }" </dev/null; }

# where: the control address, for messages.
where() { if [ -n "$SOCKET" ]; then printf 'unix:%s' "$SOCKET"; else printf '%s' "$URL"; fi; }

# request METHOD PATH [BODYFILE]: sets HTTP_STATUS and HTTP_BODY; exits 3
# when the daemon cannot be reached. /infer goes to the data plane.
request() {
    _m=$1
    _p=$2
    _b=${3:-}
    _rq_url=$URL
    _rq_sock=$SOCKET
    if [ "$_p" = /infer ] && { [ -n "$INFER_URL" ] || [ -n "$INFER_SOCKET" ]; }; then
        _rq_url=$INFER_URL
        _rq_sock=$INFER_SOCKET
    fi
    [ -n "$_rq_url" ] || _rq_url=http://localhost
    set -- -sS -o "$TMPD/body" -w '%{http_code}' --max-time "$CURL_TIMEOUT" -X "$_m"
    if [ -n "$_rq_sock" ]; then
        set -- "$@" --unix-socket "$_rq_sock"
    fi
    if [ -n "$_b" ]; then
        set -- "$@" -H 'Content-Type: application/json' --data-binary "@$_b"
    fi
    if [ -n "$TOKEN_FILE" ] && [ "$_m" = POST ] && [ "$_p" != /infer ]; then
        set -- "$@" -H "@$TMPD/auth"
    fi
    : >"$TMPD/body"
    if ! HTTP_STATUS=$(curl "$@" "$_rq_url$_p" 2>"$TMPD/curlerr"); then
        say "daemon unreachable: $_m $_p: $(head -n 1 "$TMPD/curlerr")" >&2
        if [ "$CANARY_LIVE" = 1 ]; then
            say "the canary may still be live in slot ${SLOT:-default} of $(where); roll back by hand: loradctl rollback${SLOT:+ --slot $SLOT}" >&2
        fi
        exit 3
    fi
    HTTP_BODY=$(cat "$TMPD/body")
}

# post PATH JSON: POST with a JSON body, plus "slot" with --slot.
post() {
    printf '%s' "$2" | with_slot >"$TMPD/req"
    request POST "$1" "$TMPD/req"
}

# with_slot: the JSON object on stdin, with "slot" added for --slot S.
with_slot() { jq -c --arg s "$SLOT" 'if $s == "" then . else . + {slot: $s} end'; }

# server_error: "code: message" of an error answer (or its raw start).
server_error() {
    _e=$(printf '%s' "$HTTP_BODY" | jq -r '"\(.error.code): \(.error.message)"' 2>/dev/null)
    if [ -z "$_e" ] || [ "$_e" = "null: null" ]; then
        _e=$(printf '%s' "$HTTP_BODY" | head -c 200)
    fi
    printf 'HTTP %s %s' "$HTTP_STATUS" "$_e"
}

# rollback_and_fail REASON: aborts the canary and exits 1. POST /rollback {}
# aborts a live canary but, without one, rolls the stable back to history,
# so it is sent only while /status still shows this run's canary.
rollback_and_fail() {
    say "gate failed: $1"
    request GET /status
    _cur=$(status_field 'if .canary then "\(.canary.adapter) \(.canary.version)" else "none" end')
    if [ "$HTTP_STATUS" != 200 ] || [ "$_cur" != "$ADAPTER $CANARY_VERSION" ]; then
        say "not rolling back: the canary is no longer $ADAPTER v$CANARY_VERSION (now: ${_cur:-unknown}); /rollback would roll back the stable instead" >&2
        exit 1
    fi
    post /rollback '{}'
    CANARY_LIVE=0
    if [ "$HTTP_STATUS" = 200 ]; then
        _now=$(printf '%s' "$HTTP_BODY" | jq -r '"\(.adapter) v\(.version)"' 2>/dev/null)
        say "rolled back: canary $ADAPTER v$CANARY_VERSION aborted, stable ${_now:-unchanged} serving"
    else
        say "ROLLBACK FAILED: $(server_error); the canary may still be live" >&2
    fi
    exit 1
}

# interrupted: INT/TERM; a canary this run put live is rolled back.
# shellcheck disable=SC2317
interrupted() {
    trap - INT TERM
    if [ "$CANARY_LIVE" = 1 ]; then
        rollback_and_fail "interrupted"
    fi
    exit 130
}

# status_field JQ: one value of the slot's state in the last /status body
# ("null" if absent): the top level for the default slot, else .slots[S].
status_field() {
    printf '%s' "$HTTP_BODY" |
        jq -r --arg s "$SLOT" "(if \$s == \"\" then . else (.slots[\$s] // {}) end) | $1" 2>/dev/null
}

# probe_variant VARIANT: sends the probe rows pinned to VARIANT; sets
# PROBE_STATUS, PROBE_NULLS (non-finite values) and PROBE_ROWS.
probe_variant() {
    if ! jq -c --arg v "$1" '{inputs: ., variant: $v}' "$PROBE" | with_slot >"$TMPD/probe"; then
        say "cannot build the probe request from $PROBE" >&2
        rollback_and_fail "probe file unusable"
    fi
    request POST /infer "$TMPD/probe"
    PROBE_STATUS=$HTTP_STATUS
    PROBE_NULLS=$(printf '%s' "$HTTP_BODY" |
        jq '[.outputs[][] | select(. == null or (type == "number" and isinfinite))] | length' \
            2>/dev/null)
    PROBE_ROWS=$(printf '%s' "$HTTP_BODY" | jq '.outputs | length' 2>/dev/null)
}

# run_probe: the --probe gate. Sets PROBE_MSG; returns 1 with the reason
# in PROBE_FAIL when the canary fails it.
run_probe() {
    PROBE_FAIL=""
    probe_variant canary
    if [ "$PROBE_STATUS" != 200 ]; then
        PROBE_FAIL="probe on canary answered $(server_error)"
    elif [ -z "$PROBE_NULLS" ] || [ -z "$PROBE_ROWS" ]; then
        PROBE_FAIL="probe on canary: unreadable answer"
    elif [ "$PROBE_NULLS" -gt 0 ]; then
        PROBE_FAIL="probe on canary: $PROBE_NULLS non-finite output values in $PROBE_ROWS rows"
    fi
    [ -z "$PROBE_FAIL" ] || return 1
    _crows=$PROBE_ROWS
    probe_variant stable
    if [ "$PROBE_STATUS" != 200 ]; then
        PROBE_MSG="probe rows=$_crows finite (stable answered $(server_error))"
    else
        PROBE_MSG="probe rows=$_crows finite (stable non-finite values: $PROBE_NULLS)"
    fi
    return 0
}

# check_step I N PERCENT: reads /status and applies the gates.
check_step() {
    request GET /status
    if [ "$HTTP_STATUS" != 200 ]; then
        rollback_and_fail "GET /status answered $(server_error)"
    fi
    if [ -n "$SLOT" ] && [ "$(printf '%s' "$HTTP_BODY" | jq -r 'has("slots")' 2>/dev/null)" != true ]; then
        rollback_and_fail "GET /status has no \"slots\": this lorad cannot serve slot $SLOT"
    fi
    _cad=$(status_field 'if .canary then "\(.canary.adapter) \(.canary.version)" else "none" end')
    if [ "$_cad" != "$ADAPTER $CANARY_VERSION" ]; then
        say "the canary is no longer $ADAPTER v$CANARY_VERSION (now: $_cad); someone else changed the serving state" >&2
        exit 2
    fi
    _cpct=$(status_field '.canary.percent')
    _cr=$(status_field '.requests.canary.requests // 0')
    _ce=$(status_field '.requests.canary.errors // 0')
    _cn=$(status_field '.requests.canary.nonfinite_rows // 0')
    _cp=$(status_field '.requests.canary.p99_ms // "n/a"')
    _sr=$(status_field '.requests.stable.requests // 0')
    _sp=$(status_field '.requests.stable.p99_ms // "n/a"')
    if ! is_number "$_cr" || ! is_number "$_ce" || ! is_number "$_cn" ||
        ! is_number "$_sr"; then
        say "GET /status: unreadable evidence: $(printf '%s' "$HTTP_BODY" | head -c 200)" >&2
        rollback_and_fail "no usable evidence in /status"
    fi
    _cpd=$_cp
    _spd=$_sp
    if is_number "$_cp"; then _cpd="${_cp}ms"; fi
    if is_number "$_sp"; then _spd="${_sp}ms"; fi
    _line="step $1/$2: canary at $3% (server: $_cpct%): requests=$_cr, errors=$_ce, nonfinite=$_cn, p99 canary=$_cpd stable=$_spd"
    if ! awk_true "$_cn <= $MAX_NONFINITE"; then
        say "$_line FAIL"
        rollback_and_fail "canary nonfinite_rows=$_cn > --max-nonfinite $MAX_NONFINITE"
    fi
    if awk_true "$_cr > 0 && $_ce / $_cr > $MAX_ERROR_RATE"; then
        say "$_line FAIL"
        rollback_and_fail "canary error rate $(awk "BEGIN { printf \"%.4f\", $_ce / $_cr }") ($_ce/$_cr) > --max-error-rate $MAX_ERROR_RATE"
    fi
    _lat=""
    if awk_true "$_cr < $MIN_REQUESTS || $_sr < $MIN_REQUESTS"; then
        _lat=" (latency gate skipped: canary $_cr, stable $_sr requests, need $MIN_REQUESTS each)"
    elif ! is_number "$_cp" || ! is_number "$_sp"; then
        _lat=" (latency gate skipped: no p99 figures)"
    elif awk_true "$_cp > $MAX_P99_RATIO * $_sp"; then
        say "$_line FAIL"
        rollback_and_fail "canary p99 ${_cp}ms > $MAX_P99_RATIO x stable p99 ${_sp}ms"
    fi
    PROBE_MSG=""
    if [ -n "$PROBE" ]; then
        if ! run_probe; then
            say "$_line FAIL"
            rollback_and_fail "$PROBE_FAIL"
        fi
        PROBE_MSG=", $PROBE_MSG"
    fi
    say "$_line$PROBE_MSG ok$_lat"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        --help | -h) usage; exit 0 ;;
        --url | --socket | --slot | --infer-url | --infer-socket | --adapter | --steps | \
            --interval | --max-nonfinite | --max-p99-ratio | --max-error-rate | --min-requests | \
            --token-file | --probe | --sha256)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            _v=$2
            case $1 in
            --url) URL=${_v%/} ;;
            --socket) SOCKET=$_v ;;
            --slot) SLOT=$_v ;;
            --infer-url) INFER_URL=${_v%/} ;;
            --infer-socket) INFER_SOCKET=$_v ;;
            --adapter) ADAPTER=$_v ;;
            --steps) STEPS=$_v ;;
            --interval) INTERVAL=$_v ;;
            --max-nonfinite) MAX_NONFINITE=$_v ;;
            --max-p99-ratio) MAX_P99_RATIO=$_v ;;
            --max-error-rate) MAX_ERROR_RATE=$_v ;;
            --min-requests) MIN_REQUESTS=$_v ;;
            --token-file) TOKEN_FILE=$_v ;;
            --probe) PROBE=$_v ;;
            --sha256) SHA256=$_v ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown argument: $1" ;;
        esac
    done
}

check_args() {
    [ -n "$URL" ] || [ -n "$SOCKET" ] || die_usage "--url or --socket is required"
    # the default slot is what a request without "slot" means: never send it
    [ "$SLOT" != default ] || SLOT=""
    if [ -n "$SLOT" ]; then
        printf '%s' "$SLOT" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' ||
            die_usage "--slot: not a valid slot name: $SLOT"
    fi
    [ -n "$ADAPTER" ] || die_usage "--adapter is required"
    printf '%s' "$ADAPTER" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' ||
        die_usage "--adapter: not a valid adapter name: $ADAPTER"
    is_number "$INTERVAL" || die_usage "--interval: not a number of seconds: $INTERVAL"
    is_uint "$MAX_NONFINITE" || die_usage "--max-nonfinite: not a count: $MAX_NONFINITE"
    is_uint "$MIN_REQUESTS" || die_usage "--min-requests: not a count: $MIN_REQUESTS"
    is_number "$MAX_P99_RATIO" || die_usage "--max-p99-ratio: not a number: $MAX_P99_RATIO"
    is_number "$MAX_ERROR_RATE" || die_usage "--max-error-rate: not a number: $MAX_ERROR_RATE"
    if [ -n "$SHA256" ]; then
        printf '%s' "$SHA256" | grep -Eq '^[0-9A-Fa-f]{64}$' ||
            die_usage "--sha256: not 64 hex digits"
    fi
    if [ -n "$TOKEN_FILE" ] && [ ! -r "$TOKEN_FILE" ]; then
        die_usage "--token-file: cannot read $TOKEN_FILE"
    fi
    if [ -n "$PROBE" ]; then
        [ -r "$PROBE" ] || die_usage "--probe: cannot read $PROBE"
        jq -e 'type == "array" and length > 0 and all(.[]; type == "array")' "$PROBE" \
            >/dev/null 2>&1 || die_usage "--probe: $PROBE is not a JSON array of rows"
    fi
    printf '%s' "$STEPS" | grep -Eq '^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$' ||
        die_usage "--steps: not a comma-separated list of percentages: $STEPS"
    _prev=-1
    for _s in $(printf '%s' "$STEPS" | tr ',' ' '); do
        awk_true "$_s > $_prev && $_s <= 100" ||
            die_usage "--steps: percentages must increase and stay within 0..100: $STEPS"
        _prev=$_s
    done
    for _t in curl jq awk; do
        command -v "$_t" >/dev/null 2>&1 || die_usage "$_t is required"
    done
}

main() {
    parse_args "$@"
    check_args
    TMPD=$(mktemp -d "${TMPDIR:-/tmp}/canary-rollout.XXXXXX") || exit 3
    trap cleanup EXIT
    trap interrupted INT TERM
    if [ -n "$TOKEN_FILE" ]; then
        # The header goes through a file so the token never shows in ps.
        printf 'Authorization: Bearer %s\n' "$(tr -d '\r\n' <"$TOKEN_FILE")" >"$TMPD/auth"
    fi

    _n=$(printf '%s\n' "$STEPS" | awk -F, '{ print NF }')
    _first=${STEPS%%,*}
    _body=$(jq -cn --arg a "$ADAPTER" --argjson p "$_first" --arg h "$SHA256" \
        '{adapter: $a, canary_percent: $p} + (if $h == "" then {} else {sha256: $h} end)')
    say "swap: $ADAPTER as canary at $_first% in slot ${SLOT:-default} of $(where)"
    post /swap "$_body"
    if [ "$HTTP_STATUS" != 200 ]; then
        say "swap refused: $(server_error)" >&2
        exit 2
    fi
    CANARY_VERSION=$(printf '%s' "$HTTP_BODY" | jq -r '.version' 2>/dev/null)
    CANARY_LIVE=1
    say "swap: $(printf '%s' "$HTTP_BODY" | jq -r '"canary \(.adapter) v\(.version) at generation \(.generation), staged in \(.stage_ms) ms"' 2>/dev/null)"

    _i=0
    for _s in $(printf '%s' "$STEPS" | tr ',' ' '); do
        _i=$((_i + 1))
        if [ "$_i" -gt 1 ]; then
            post /canary "$(jq -cn --argjson p "$_s" '{percent: $p}')"
            if [ "$HTTP_STATUS" != 200 ]; then
                rollback_and_fail "POST /canary {\"percent\": $_s} answered $(server_error)"
            fi
        fi
        sleep "$INTERVAL"
        check_step "$_i" "$_n" "$_s"
    done

    post /promote '{}'
    if [ "$HTTP_STATUS" != 200 ]; then
        say "promote refused: $(server_error)" >&2
        rollback_and_fail "promote failed"
    fi
    CANARY_LIVE=0
    say "promoted: $(printf '%s' "$HTTP_BODY" | jq -r '"\(.adapter) v\(.version) is stable (generation \(.generation))"' 2>/dev/null)"
    exit 0
}

main "$@"
