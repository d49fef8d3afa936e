#!/usr/bin/env bash
# run-all.sh - runs every integration test (tests/integration/t-*.sh) against
# one build, each under its own timeout, and summarises. `make integration`
# calls it with the build dir (build, or build/sanitize for SANITIZE=1).
#
# A test may set its timeout with a line "# timeout: SECONDS" near its top
# (default 120). A test with a line "# long: yes" (4,000 volumes, power
# cuts) runs only under `make check-long` (VT_LONG=1), which runs only those;
# named on the command line, a test runs whatever its kind. Each test's output goes to $LOGDIR/NAME.log (default
# BUILD_DIR/integration-logs); the end of a failed one's is shown here.
#
# In a sanitizer build (SANITIZE=1), what ASan, LeakSanitizer or UBSan
# report in any process a test starts goes to $LOGDIR/sanitizer/NAME.PID,
# and any such report fails the test: a lab's vsands write their stderr to
# logs that go with the lab, and most of them are stopped by the test's
# teardown, so their reports (a leak shows only at exit) would go unseen.
#
# Usage: tests/integration/run-all.sh BUILD_DIR [TEST_NAME...]
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${1:-build}
shift || true
case $build in
/*) ;;
*) build="$repo/$build" ;;
esac
logdir=${LOGDIR:-$build/integration-logs}
sandir=$logdir/sanitizer
mkdir -p "$logdir" "$sandir" || exit 1

if [ $# -gt 0 ]; then
    tests=()
    for name in "$@"; do
        tests+=("$here/${name%.sh}.sh")
    done
else
    tests=()
    for t in "$here"/t-*.sh; do
        long=no
        grep -q '^# long: *yes' "$t" && long=yes
        if [ "${VT_LONG:-0}" = 1 ]; then
            [ "$long" = yes ] && tests+=("$t")
        else
            [ "$long" = no ] && tests+=("$t")
        fi
    done
fi

# Lab tests take turns on a machine (labtest.sh says why). A run waits for
# its turn before its first test, outside every test's timeout (a make check
# started while a make soak runs waits for it), and its tests share the turn.
LABTEST_LOCK=/run/lock/vsan-labtest.lock
LABTEST_WAIT=1800
if printf '%s\n' "${tests[@]}" | grep -q '/t-lab-[^/]*$'; then
    exec {VSAN_LABTEST_FD}>>"$LABTEST_LOCK" || exit 1
    if ! flock -n "$VSAN_LABTEST_FD"; then
        echo "another lab test runs on this machine; waiting up to $LABTEST_WAIT s for it"
        if ! flock -w "$LABTEST_WAIT" "$VSAN_LABTEST_FD"; then
            echo "another lab test held $LABTEST_LOCK for $LABTEST_WAIT s: $(lslocks -o PID,COMMAND,PATH 2>/dev/null | grep vsan-labtest)"
            exit 1
        fi
    fi
    export VSAN_LABTEST_FD
fi

passed=0
failed=0
failed_names=()
suite_start=$SECONDS
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    limit=$(sed -n 's/^# timeout: *\([0-9][0-9]*\).*/\1/p' "$t" | head -n 1)
    limit=${limit:-120}
    start=$(date +%s.%N)
    rm -f "$sandir/$name".*
    # log_path last, so that it wins over one in the caller's options.
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$sandir/$name" \
        UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:log_path=$sandir/$name" \
        timeout --kill-after=10 "$limit" bash "$t" "$build" >"$logdir/$name.log" 2>&1
    status=$?
    reports=("$sandir/$name".*)
    if [ -e "${reports[0]}" ]; then
        {
            echo "--- sanitizer reports (${#reports[@]}): ${reports[*]}"
            head -n 40 "${reports[@]}"
        } >>"$logdir/$name.log"
        [ "$status" -ne 0 ] || status=sanitizer
    fi
    elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if [ "$status" = 0 ]; then
        passed=$((passed + 1))
        printf 'PASS %-16s %6ss\n' "$name" "$elapsed"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        why="exit $status"
        [ "$status" = 124 ] && why="timed out after ${limit}s"
        [ "$status" = sanitizer ] && why="sanitizer reports"
        printf 'FAIL %-16s %6ss (%s)\n' "$name" "$elapsed" "$why"
        tail -n 80 "$logdir/$name.log" | sed 's/^/    | /'
        echo "    (full output: $logdir/$name.log)"
    fi
done

echo "integration: $((SECONDS - suite_start)) s; logs in $logdir"
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
