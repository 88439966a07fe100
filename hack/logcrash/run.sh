#!/usr/bin/env bash
# Kill-and-recover torture of the evidence log (TestCrash in evidence/log), many kills over.
#
#   hack/logcrash/run.sh [KILLS] [RUNS]
#
# Each run executes TestCrash with KILLS SIGKILLs per backend: POSIX, and MySQL when the MariaDB
# at 127.0.0.1:3306 (or $PROOFLINE_TEST_MYSQL_DSN) is reachable. A helper process appends from 8
# goroutines and prints every acknowledged index and leaf digest the moment Append returns; it is
# killed at a random moment (some kills land during Open); after every kill the test reopens the
# log, checks every acknowledged record byte for byte at its index, and runs Fsck (before and
# after the restart's checkpoint publication). RUNS (default 1) repeats it; the first failure
# stops the loop and keeps the full output.
set -euo pipefail
kills=${1:-200}
runs=${2:-1}
cd "$(dirname "$0")/../.."
out=$(mktemp -t logcrash.XXXXXX)
for ((i = 1; i <= runs; i++)); do
	echo "run $i/$runs: $kills kills per backend"
	if ! PROOFLINE_LOGCRASH_KILLS=$kills go test -race -count=1 -timeout 120m -run '^TestCrash$' -v ./evidence/log/ >"$out" 2>&1; then
		grep -E '^(---|\s+---|\s+\w+_test\.go|FAIL|panic)' "$out" || true
		echo "FAILED: full output in $out"
		exit 1
	fi
	grep -E '^(\s+--- |\s+crash_test\.go)' "$out"
done
rm -f "$out"
