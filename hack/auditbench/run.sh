#!/usr/bin/env bash
# Audit bundle round trip at scale (acceptance 1 of the auditor-experience issue).
#
#   hack/auditbench/run.sh [RECORDS] [VMS]
#
# Builds proofline and hack/auditbench (no race detector: it measures), generates a log of
# RECORDS records (default 100000) through the real verifier service in simulated mode, then
# times `proofline audit export` of the whole log and of a one-day window, and
# `proofline audit verify` of both (every signature, inclusion proof and verdict re-performed),
# reporting wall time, CPU time and peak memory of each step. It exits non-zero if a step fails
# or a bundle does not verify. hack/bench/README.md ("Audit bundle") reports a run.
set -euo pipefail
records=${1:-100000}
vms=${2:-64}
cd "$(dirname "$0")/../.."
work=$(mktemp -d -t auditbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/proofline" ./cmd/proofline
go build -o "$work/auditbench" ./hack/auditbench
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg), $(go version | cut -d' ' -f3)"

# step NAME CMD…: runs CMD, printing its wall and CPU time and peak RSS on stderr.
step() {
  local name=$1
  shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%U %S %M" -o "$work/time" "$@"
  end=$(date +%s.%N)
  read -r user sys rss < "$work/time"
  printf '== %-28s wall %7.1f s  cpu %7.1f s  peak RSS %5d MiB\n' "$name" "$(echo "$end - $start" | bc)" "$(echo "$user + $sys" | bc)" $((rss / 1024)) >&2
}

step "generate $records records" "$work/auditbench" -records "$records" -vms "$vms" -dir "$work" | tee "$work/gen.txt"
data=$(awk '/^data /{print $2}' "$work/gen.txt")
roots=$(awk '/^roots /{print $2}' "$work/gen.txt")
start=$(awk '/^start /{print $2}' "$work/gen.txt")
du -sh "$data/log" "$data/blobs" | sed 's/^/   /' >&2

step "export whole log" "$work/proofline" audit export --quiet --data "$data" --roots "$roots" --out "$work/all.tar.gz"
ls -l "$work/all.tar.gz" | awk '{printf "   bundle %.1f MiB\n", $5/1048576}'
step "verify whole log" "$work/proofline" audit verify --quiet "$work/all.tar.gz" > "$work/verify-all.txt" || { cat "$work/verify-all.txt"; exit 1; }
grep -E '^  (records|verdicts)|^RESULT' "$work/verify-all.txt"

day_from=$start
day_to=$(date -u -d "$start + 1 day - 1 second" +%Y-%m-%dT%H:%M:%SZ)
step "export one day" "$work/proofline" audit export --quiet --data "$data" --roots "$roots" --from "$day_from" --to "$day_to" --out "$work/day.tar.gz"
ls -l "$work/day.tar.gz" | awk '{printf "   bundle %.1f MiB\n", $5/1048576}'
step "verify one day" "$work/proofline" audit verify --quiet "$work/day.tar.gz" > "$work/verify-day.txt" || { cat "$work/verify-day.txt"; exit 1; }
grep -E '^  (window|records|verdicts)|^RESULT' "$work/verify-day.txt"
