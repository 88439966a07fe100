#!/usr/bin/env bash
# Burst of simulated agents against one verifier (acceptance 3 of the guest-agent issue).
#
#   hack/agentburst/run.sh [AGENTS] [extra agentburst flags…]
#
# Builds hack/agentburst (no race detector: it measures) and runs it with AGENTS agents (default
# 1000) started at once against an in-process verifier with `proofline serve`'s default queue.
# It prints the time until all are attested, the 503s, the retries and the latencies, and exits
# 1 if an agent was not attested within 60 s or the evidence log does not hold every result.
# hack/bench/README.md ("Guest agent burst") reports a run.
set -euo pipefail
agents=${1:-1000}
shift || true
cd "$(dirname "$0")/../.."
bin=$(mktemp -d -t agentburst.XXXXXX)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/agentburst" ./hack/agentburst
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/agentburst" -agents "$agents" "$@"
