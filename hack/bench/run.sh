#!/usr/bin/env bash
# Issue 9's measurements in one command (hack/bench/README.md, "Verification and end to end
# against the cryptographic floor"):
#
#   hack/bench/run.sh [COUNT] [LOAD_SECONDS]      # defaults: 5 runs, 60 s of load
#
#  1. go test -bench 'Floor|Verify' ./verifier/ and -bench AttestHTTP ./verifier/api/, COUNT
#     times each (non-race), then the medians and the ratios real/floor (rates: floor ns / real
#     ns), each against the floor measured in the same run;
#  2. the open-loop load (hack/loadgen) against `proofline serve --test-mode` at 80 % of the
#     lower end-to-end median, for LOAD_SECONDS, with the server's peak RSS (VmHWM), its mean
#     log-append and verification times (/metrics), and `proofline log fsck` after it,
#     checking that every acknowledged record is in the log.
# Exit status 1 if a step fails; the acceptance targets are printed, not enforced.
set -euo pipefail
count=${1:-5}
load_secs=${2:-60}
cd "$(dirname "$0")/../.."
work=$(mktemp -d -t proofline-bench.XXXXXX)
serve_pid=""
cleanup() {
  if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then kill -TERM "$serve_pid"; wait "$serve_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

echo "== benchmarks (-count $count)"
go test -run '^$' -bench 'Floor|Verify' -benchtime 2s -count "$count" -benchmem ./verifier/ | tee "$work/verify.txt"
go test -run '^$' -bench 'AttestHTTP' -benchtime 3s -count "$count" ./verifier/api/ | tee "$work/e2e.txt"

# median NAME FIELD FILE: the median of the value before unit FIELD on the lines of benchmark NAME.
median() {
  awk -v name="$1" -v unit="$2" '$1 ~ "^"name"(-[0-9]+)?$" { for (i = 3; i <= NF; i++) if ($i == unit) print $(i-1) }' "$3" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "NaN"; exit } ; if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

f_tdx=$(median BenchmarkFloor/tdx ns/op "$work/verify.txt")
f_snp=$(median BenchmarkFloor/snp ns/op "$work/verify.txt")
v_tdx=$(median BenchmarkVerify/tdx ns/op "$work/verify.txt")
v_snp=$(median BenchmarkVerify/sev-snp ns/op "$work/verify.txt")
a_tdx=$(median BenchmarkVerify/tdx allocs/op "$work/verify.txt")
a_snp=$(median BenchmarkVerify/sev-snp allocs/op "$work/verify.txt")
e_tdx=$(median BenchmarkAttestHTTP/tdx attest/s "$work/e2e.txt")
e_snp=$(median BenchmarkAttestHTTP/sev-snp attest/s "$work/e2e.txt")
r_tdx=$(median BenchmarkAttestHTTP/tdx floor-ratio "$work/e2e.txt")
r_snp=$(median BenchmarkAttestHTTP/sev-snp floor-ratio "$work/e2e.txt")
echo
echo "== medians of $count runs"
q_tdx=$(median BenchmarkVerify/tdx floor-ratio "$work/verify.txt")
q_snp=$(median BenchmarkVerify/sev-snp floor-ratio "$work/verify.txt")
printf '%-8s %12s %13s %10s %14s %14s %14s %16s\n' platform "floor ns/op" "Verify ns/op" allocs/op "Verify/floor" "(interleaved)" "HTTP attest/s" "HTTP/floor"
printf '%-8s %12s %13s %10s %14s %14s %14s %16s\n' TDX "$f_tdx" "$v_tdx" "$a_tdx" "$(ratio "$f_tdx" "$v_tdx")x" "${q_tdx}x" "$e_tdx" "${r_tdx}x"
printf '%-8s %12s %13s %10s %14s %14s %14s %16s\n' SEV-SNP "$f_snp" "$v_snp" "$a_snp" "$(ratio "$f_snp" "$v_snp")x" "${q_snp}x" "$e_snp" "${r_snp}x"
echo "Verify/floor: median floor ns / median Verify ns (separate benchmarks); (interleaved): median of"
echo "each run's floor-ratio, the floor measured just before and after that run (robust on a shared"
echo "machine). HTTP/floor: the same, both sides on 2 goroutines."
echo "targets: Verify/floor >= 0.7x (TDX), >= 0.8x (SEV-SNP); HTTP/floor >= 0.5x each"

echo
rate=$(awk -v a="$e_tdx" -v b="$e_snp" 'BEGIN { m = a < b ? a : b; printf "%.0f", 0.8 * m }')
echo "== load: ${load_secs}s at $rate/s (80 % of the lower end-to-end median), half TDX, half SEV-SNP"
go build -o "$work/proofline" ./cmd/proofline
go build -o "$work/loadgen" ./hack/loadgen
data="$work/data"
port=$((20000 + RANDOM % 20000))
"$work/loadgen" -write-config "$work/serve.yaml" -data-dir "$data" -listen "127.0.0.1:$port" -vms 512
# An auditor token (the configuration's token list ends the file) to read /metrics after the load.
monitor_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "    - {name: bench-monitor, role: auditor, sha256: $(printf %s "$monitor_token" | sha256sum | cut -d' ' -f1)}" >>"$work/serve.yaml"
"$work/proofline" serve --test-mode --config "$work/serve.yaml" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
  [[ -f "$data/simulated-platforms.json" ]] && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
load_rc=0
"$work/loadgen" -url "http://127.0.0.1:$port" -data-dir "$data" -rate "$rate" -duration "${load_secs}s" -vms 512 -timeline | tee "$work/load.txt" || load_rc=$?
hwm=$(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$serve_pid/status")
echo "peak RSS of proofline serve (VmHWM): $hwm (target < 512 MiB)"
# Where a request's time went, from the service's own histograms: the durable log append
# (queueing for and waiting on the group commit) and the verification.
curl -sf -H "Authorization: Bearer $monitor_token" "http://127.0.0.1:$port/metrics" >"$work/metrics.txt" || true
awk '/^proofline_log_append_duration_seconds_sum/ { as = $2 } /^proofline_log_append_duration_seconds_count/ { ac = $2 }
     /^proofline_verification_duration_seconds_sum/ { vs += $2 } /^proofline_verification_duration_seconds_count/ { vc += $2 }
     END { if (ac > 0 && vc > 0) printf "server side, mean per attestation: log append %.1f ms, verification %.2f ms\n", 1000 * as / ac, 1000 * vs / vc }' "$work/metrics.txt"
kill -TERM "$serve_pid"
wait "$serve_pid" || true
serve_pid=""
"$work/proofline" log fsck --log "$data/log" --keys "$data/keys/history.json" | tee "$work/fsck.txt"
ok=$(sed -n 's/^RESULT .* ok=\([0-9]*\) .*/\1/p' "$work/load.txt")
maxidx=$(sed -n 's/^RESULT .* max_log_index=\([0-9]*\).*/\1/p' "$work/load.txt")
records=$(awk '$1 == "records" { print $2 }' "$work/fsck.txt")
echo "acknowledged $ok attestations (highest log index $maxidx); the log holds $records verified records"
if [[ -z "$records" || "$records" -lt "$ok" || "$records" -le "$maxidx" ]]; then
  echo "LOST RECORDS: the log holds fewer records than were acknowledged" >&2
  exit 1
fi
exit "$load_rc"
