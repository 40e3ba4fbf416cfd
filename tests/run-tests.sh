#!/bin/sh
# lorad — tests/run-tests.sh: runs test binaries (Check suites) one after
# another, keeps each one's output in $B/tests/logs/, prints Check's own
# summary line per binary (with the "SKIP: ..." notices its checks printed)
# and one closing line "N passed, N failed" over all of them. Exits non-zero
# when any check failed or any binary crashed.
set -u
B=${B:-build}
logs="$B/tests/logs"
mkdir -p "$logs"
passed=0
failed=0
bad=""
for t in "$@"; do
    name=$(basename "$t")
    log="$logs/$name.log"
    "$t" >"$log" 2>&1
    rc=$?
    # Check: "100%: Checks: 12, Failures: 0, Errors: 0"
    line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2/' | awk '{print $1+$2}')
        passed=$((passed + n - f))
        failed=$((failed + f))
        printf '%-28s %s\n' "$name" "$line"
    else
        printf '%-28s no Check summary (exit %d)\n' "$name" "$rc"
        failed=$((failed + 1))
    fi
    # a skipped check says so in its log ("SKIP: ..."): show it, never pass silently
    grep -E '^SKIP: ' "$log" | sed "s/^/    $name| /"
    if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
        bad="$bad $name"
        grep -vE '^(Running suite|[0-9]+%: Checks)' "$log" | tail -n 40 | sed "s/^/    $name| /"
    fi
done
echo "$passed passed, $failed failed"
[ -z "$bad" ] || { echo "failing:$bad (logs in $logs)"; exit 1; }
exit 0
