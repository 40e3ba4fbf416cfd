#!/bin/sh
# lorad — scripts/lorad-update.sh: PEFT's "scheduled update" pattern (a new
# adapter version every night) for one slot of a lorad instance; run by
# systemd/lorad-update@.timer through lorad-update@.service, or by hand.
#
# It picks the newest adapter directory under --adapter-dir whose name
# matches --pattern (a shell glob such as 'support-bot-v*'; newest by
# version sort, `sort -V`, so v10 comes after v9), among directories that
# hold adapter_config.json and whose names lorad accepts. It then reads
# GET /status: when the slot's stable is already that adapter and no canary
# is live it logs "already current" and exits 0 (no other request is sent);
# otherwise it rolls the adapter out through canary-rollout.sh with its
# evidence gates (pinned to the sha256 of the adapter_model.safetensors it
# found), which promotes it or rolls it back.
#
# Where lorad is: -c FILE (lorad's config: control_listen, else listen;
# listen for the probe's /infer; auth_token_file; adapter_dir), or --url /
# --socket. The token: --token-file, else $CREDENTIALS_DIRECTORY/token
# (systemd LoadCredential=token:...), else the config's auth_token_file.
# Logs go to stderr, one line per event, with a <N> syslog priority prefix
# when stderr is the journal ($JOURNAL_STREAM), as lorad's own logs.
#
# Exit: 0 rolled out or already current, 1 a gate failed (rolled back), 2
# lorad refused (or a canary is already live in the slot, or it has no
# slots), 3 lorad unreachable, 64 usage or configuration error (no
# matching adapter directory included). Needs POSIX sh, curl, jq, awk and
# sort -V (GNU coreutils).
set -u

PROG=lorad-update
CONFIG=""
URL=""
SOCKET=""
TOKEN_FILE=""
SLOT=default
ADAPTER_DIR=""
PATTERN=""
CANARY_SCRIPT=""
DRY_RUN=0
# canary-rollout.sh gate options, passed through when given
G_STEPS=""
G_INTERVAL=""
G_MAX_NONFINITE=""
G_MAX_ERROR_RATE=""
G_MAX_P99_RATIO=""
G_MIN_REQUESTS=""
G_PROBE=""
# the data plane, for the probe, when it is not the control address
INFER_URL=""
INFER_SOCKET=""
CURL_TIMEOUT=${LORAD_UPDATE_CURL_TIMEOUT:-60}
TMPD=""

usage() {
    cat <<'EOF'
usage: lorad-update.sh --pattern GLOB [-c FILE | --url URL | --socket PATH] [options]

Rolls the newest adapter directory matching GLOB (version sort) out to one
slot of lorad through canary-rollout.sh, unless the slot already serves it.

  -c, --config FILE     lorad's config: control address, token file and
                        adapter_dir (default /etc/lorad/lorad.json when
                        neither --url nor --socket is given)
  --url URL             control-plane base URL instead of the config's
  --socket PATH         control-plane unix socket instead of the config's
  --token-file F        bearer token file (default: $CREDENTIALS_DIRECTORY/
                        token, else the config's auth_token_file)
  --slot S              the slot to update (default: default)
  --adapter-dir DIR     where the adapter versions are (default: the
                        config's adapter_dir)
  --pattern GLOB        adapter directory names to consider, e.g.
                        'support-bot-v*' (quote it)
  --canary-script PATH  canary-rollout.sh to run (default: next to this one)
  --dry-run             say what would be done, change nothing
  --help                this text
gates, passed to canary-rollout.sh (see its --help for the defaults):
  --steps LIST  --interval S  --max-nonfinite N  --max-error-rate R
  --max-p99-ratio X  --min-requests N  --probe FILE

exit status: 0 rolled out or already current, 1 gate failed (rolled back),
2 refused or a canary already live, 3 unreachable, 64 usage or config error
EOF
}

# log LEVEL MESSAGE: one line on stderr; LEVEL err, warning, notice or info.
log() {
    _pri=""
    if [ -n "${JOURNAL_STREAM:-}" ]; then
        case $1 in
        err) _pri="<3>" ;;
        warning) _pri="<4>" ;;
        notice) _pri="<5>" ;;
        *) _pri="<6>" ;;
        esac
    fi
    shift
    printf '%s%s: slot=%s %s\n' "$_pri" "$PROG" "$SLOT" "$*" >&2
}
die() {
    _rc=$1
    shift
    log err "$*"
    exit "$_rc"
}
die_usage() {
    log err "$*"
    printf '%s: try --help\n' "$PROG" >&2
    exit 64
}

# Trap handler (shellcheck cannot see trap calls: SC2317).
# shellcheck disable=SC2317
cleanup() { if [ -n "$TMPD" ]; then rm -rf "$TMPD"; fi; }

is_name() { printf '%s' "$1" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'; }

# strip_comments FILE: the JSON text of lorad's config without its // and
# /* */ comments (outside strings), as lorad's cJSON_Minify drops them.
strip_comments() {
    awk '
    { buf = buf $0 "\n" }
    END {
        n = length(buf); i = 1; instr = 0; out = ""
        while (i <= n) {
            c = substr(buf, i, 1)
            if (instr) {
                out = out c
                if (c == "\\") { out = out substr(buf, i + 1, 1); i += 2; continue }
                if (c == "\"") instr = 0
                i++
                continue
            }
            two = substr(buf, i, 2)
            if (two == "//") {
                j = index(substr(buf, i), "\n")
                if (j == 0) break
                i += j - 1
                continue
            }
            if (two == "/*") {
                j = index(substr(buf, i + 2), "*/")
                if (j == 0) { out = out "/*"; break }
                i += j + 3
                continue
            }
            if (c == "\"") instr = 1
            out = out c
            i++
        }
        printf "%s", out
    }' "$1"
}

# address ADDR: sets A_URL or A_SOCKET for a lorad listen address
# ("unix:/p", "HOST:PORT", "[V6]:PORT"; wildcard hosts -> loopback).
address() {
    A_URL=""
    A_SOCKET=""
    case $1 in
    unix:?*) A_SOCKET=${1#unix:} ;;
    :[0-9]* | 0.0.0.0:[0-9]*) A_URL="http://127.0.0.1:${1##*:}" ;;
    "[::]:"[0-9]*) A_URL="http://[::1]:${1##*:}" ;;
    *:[0-9]*) A_URL="http://$1" ;;
    *) die_usage "config: \"$1\" is not HOST:PORT or unix:/path" ;;
    esac
}

# read_config FILE: the control and data addresses, token file and
# adapter_dir that lorad's config names (command-line options win).
read_config() {
    [ -r "$1" ] || die_usage "cannot read lorad's config $1 (give -c FILE, --url or --socket)"
    strip_comments "$1" >"$TMPD/config.json" ||
        die_usage "cannot read lorad's config $1"
    jq -e 'type == "object"' "$TMPD/config.json" >/dev/null 2>&1 ||
        die_usage "$1: not a JSON object (lorad --check-config -c $1 says why)"
    _listen=$(jq -r '.listen // "127.0.0.1:8080"' "$TMPD/config.json")
    _control=$(jq -r '.control_listen // empty' "$TMPD/config.json")
    if [ -z "$URL" ] && [ -z "$SOCKET" ]; then
        address "${_control:-$_listen}"
        URL=$A_URL
        SOCKET=$A_SOCKET
        if [ -n "$_control" ]; then
            address "$_listen"
            INFER_URL=$A_URL
            INFER_SOCKET=$A_SOCKET
        fi
    fi
    if [ -z "$TOKEN_FILE" ]; then
        TOKEN_FILE=$(jq -r '.auth_token_file // empty' "$TMPD/config.json")
    fi
    if [ -z "$ADAPTER_DIR" ]; then
        ADAPTER_DIR=$(jq -r '.adapter_dir // empty' "$TMPD/config.json")
    fi
}

# newest: the newest matching adapter directory name (empty: none).
newest() {
    for _d in "$ADAPTER_DIR"/*; do
        _n=${_d##*/}
        # PATTERN is a glob on purpose.
        # shellcheck disable=SC2254
        case $_n in
        $PATTERN) ;;
        *) continue ;;
        esac
        if [ ! -d "$_d" ] || [ ! -f "$_d/adapter_config.json" ]; then
            continue
        fi
        if ! is_name "$_n"; then
            log warning "skipping $_n: not a name lorad accepts"
            continue
        fi
        printf '%s\n' "$_n"
    done | LC_ALL=C sort -V | tail -n 1
}

# status: GET /status into $TMPD/status; exits 3 when unreachable, 2 on a
# refusal.
status() {
    set -- -sS -o "$TMPD/status" -w '%{http_code}' --max-time "$CURL_TIMEOUT"
    if [ -n "$SOCKET" ]; then
        set -- "$@" --unix-socket "$SOCKET"
    fi
    if ! _code=$(curl "$@" "${URL:-http://localhost}/status" 2>"$TMPD/curlerr"); then
        die 3 "lorad unreachable at ${URL:-unix:$SOCKET}: $(head -n 1 "$TMPD/curlerr")"
    fi
    [ "$_code" = 200 ] || die 2 "GET /status answered HTTP $_code: $(head -c 200 "$TMPD/status")"
}

# slot_field JQ: a value of the slot's state in the /status answer.
slot_field() {
    jq -r --arg s "$SLOT" \
        "(if \$s == \"default\" and (has(\"slots\") | not) then . else .slots[\$s] end) | $1" \
        "$TMPD/status" 2>/dev/null
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        --help | -h) usage; exit 0 ;;
        --dry-run) DRY_RUN=1; shift; continue ;;
        -c | --config | --url | --socket | --token-file | --slot | --adapter-dir | --pattern | \
            --canary-script | --steps | --interval | --max-nonfinite | --max-error-rate | \
            --max-p99-ratio | --min-requests | --probe) ;;
        *) die_usage "unknown argument: $1" ;;
        esac
        [ $# -ge 2 ] || die_usage "$1 needs a value"
        case $1 in
        -c | --config) CONFIG=$2 ;;
        --url) URL=${2%/} ;;
        --socket) SOCKET=$2 ;;
        --token-file) TOKEN_FILE=$2 ;;
        --slot) SLOT=$2 ;;
        --adapter-dir) ADAPTER_DIR=${2%/} ;;
        --pattern) PATTERN=$2 ;;
        --canary-script) CANARY_SCRIPT=$2 ;;
        --steps) G_STEPS=$2 ;;
        --interval) G_INTERVAL=$2 ;;
        --max-nonfinite) G_MAX_NONFINITE=$2 ;;
        --max-error-rate) G_MAX_ERROR_RATE=$2 ;;
        --max-p99-ratio) G_MAX_P99_RATIO=$2 ;;
        --min-requests) G_MIN_REQUESTS=$2 ;;
        --probe) G_PROBE=$2 ;;
        esac
        shift 2
    done
}

# find_canary_script: next to this script (source tree or installed name),
# else on $PATH.
find_canary_script() {
    _here=$(dirname "$0")
    for _c in "$_here/canary-rollout.sh" "$_here/lorad-canary-rollout"; do
        if [ -x "$_c" ]; then
            CANARY_SCRIPT=$_c
            return
        fi
    done
    CANARY_SCRIPT=$(command -v lorad-canary-rollout 2>/dev/null) ||
        die_usage "canary-rollout.sh not found next to $0 nor lorad-canary-rollout on PATH (--canary-script)"
}

check_args() {
    [ -n "$PATTERN" ] || die_usage "--pattern is required"
    is_name "$SLOT" || die_usage "--slot: not a valid slot name: $SLOT"
    if [ -z "$CONFIG" ] && [ -z "$URL" ] && [ -z "$SOCKET" ]; then
        CONFIG=/etc/lorad/lorad.json
    fi
    if [ -z "$TOKEN_FILE" ] && [ -n "${CREDENTIALS_DIRECTORY:-}" ] &&
        [ -r "$CREDENTIALS_DIRECTORY/token" ]; then
        TOKEN_FILE=$CREDENTIALS_DIRECTORY/token
    fi
    for _t in curl jq awk sort; do
        command -v "$_t" >/dev/null 2>&1 || die_usage "$_t is required"
    done
    if [ -z "$CANARY_SCRIPT" ]; then
        find_canary_script
    fi
    [ -x "$CANARY_SCRIPT" ] || die_usage "--canary-script: not executable: $CANARY_SCRIPT"
}

# rollout NAME SHA: canary-rollout.sh with this run's address and gates;
# its lines are logged; returns its exit status.
rollout() {
    _name=$1
    _hash=$2
    set -- --adapter "$_name"
    if [ -n "$_hash" ]; then set -- "$@" --sha256 "$_hash"; fi
    if [ -n "$URL" ]; then set -- "$@" --url "$URL"; fi
    if [ -n "$SOCKET" ]; then set -- "$@" --socket "$SOCKET"; fi
    if [ -n "$INFER_URL" ]; then set -- "$@" --infer-url "$INFER_URL"; fi
    if [ -n "$INFER_SOCKET" ]; then set -- "$@" --infer-socket "$INFER_SOCKET"; fi
    if [ "$SLOT" != default ]; then set -- "$@" --slot "$SLOT"; fi
    if [ -n "$TOKEN_FILE" ]; then set -- "$@" --token-file "$TOKEN_FILE"; fi
    if [ -n "$G_STEPS" ]; then set -- "$@" --steps "$G_STEPS"; fi
    if [ -n "$G_INTERVAL" ]; then set -- "$@" --interval "$G_INTERVAL"; fi
    if [ -n "$G_MAX_NONFINITE" ]; then set -- "$@" --max-nonfinite "$G_MAX_NONFINITE"; fi
    if [ -n "$G_MAX_ERROR_RATE" ]; then set -- "$@" --max-error-rate "$G_MAX_ERROR_RATE"; fi
    if [ -n "$G_MAX_P99_RATIO" ]; then set -- "$@" --max-p99-ratio "$G_MAX_P99_RATIO"; fi
    if [ -n "$G_MIN_REQUESTS" ]; then set -- "$@" --min-requests "$G_MIN_REQUESTS"; fi
    if [ -n "$G_PROBE" ]; then set -- "$@" --probe "$G_PROBE"; fi
    if [ "$DRY_RUN" = 1 ]; then
        log notice "dry run: would run $CANARY_SCRIPT $*"
        return 0
    fi
    { "$CANARY_SCRIPT" "$@" 2>&1; echo "$?" >"$TMPD/rollout.rc"; } |
        while IFS= read -r _line; do log info "$_line"; done
    return "$(cat "$TMPD/rollout.rc" 2>/dev/null || echo 3)"
}

main() {
    parse_args "$@"
    check_args
    TMPD=$(mktemp -d "${TMPDIR:-/tmp}/lorad-update.XXXXXX") || exit 3
    trap cleanup EXIT
    if [ -n "$CONFIG" ]; then
        read_config "$CONFIG"
    fi
    [ -n "$ADAPTER_DIR" ] || die_usage "--adapter-dir is required (or -c with adapter_dir)"
    [ -d "$ADAPTER_DIR" ] || die_usage "--adapter-dir: not a directory: $ADAPTER_DIR"

    _new=$(newest)
    [ -n "$_new" ] || die 64 "no adapter directory in $ADAPTER_DIR matches '$PATTERN'"
    status
    if [ "$SLOT" != default ] && [ "$(jq -r 'has("slots")' "$TMPD/status")" != true ]; then
        die 2 "this lorad has no slots (GET /status has no \"slots\"); only slot default exists"
    fi
    _exists=$(slot_field 'if . == null then "no" else "yes" end')
    _stable=$(slot_field 'if .stable.adapter then "\(.stable.adapter) v\(.stable.version)" else "(base) v\(.stable.version // 0)" end')
    _canary=$(slot_field 'if .canary then "\(.canary.adapter) v\(.canary.version) at \(.canary.percent)%" else "" end')
    if [ "$_exists" = no ]; then
        log notice "slot does not exist yet: the rollout creates it"
        _stable="(base) v0"
    fi
    if [ -n "$_canary" ]; then
        die 2 "a canary is live ($_canary): not starting; promote it or roll it back first (loradctl promote|rollback --slot $SLOT)"
    fi
    case $_stable in
    "$_new v"*)
        log info "already current: $_stable is the newest match of '$PATTERN' in $ADAPTER_DIR"
        exit 0
        ;;
    esac

    _sha=""
    if [ -f "$ADAPTER_DIR/$_new/adapter_model.safetensors" ]; then
        _sha=$(sha256sum "$ADAPTER_DIR/$_new/adapter_model.safetensors" | cut -d' ' -f1)
    fi
    log notice "update: $_stable -> $_new${_sha:+ (sha256 $_sha)}"
    rollout "$_new" "$_sha"
    _rc=$?
    case $_rc in
    0) [ "$DRY_RUN" = 1 ] || log notice "updated: $_new is stable" ;;
    1) log err "gate failed: $_new rolled back, $_stable still serving" ;;
    2) log err "lorad refused the rollout of $_new; $_stable still serving" ;;
    3) log err "lorad unreachable during the rollout of $_new" ;;
    *) log err "canary-rollout.sh exited $_rc" ;;
    esac
    exit "$_rc"
}

main "$@"
