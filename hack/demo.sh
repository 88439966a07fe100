#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: builds proofline and appraises every recorded fixture
# offline, printing each verdict. The full demo (agent, service, evidence log) arrives with the
# service; today it shows the verification core on real recorded reports and fake-PKI evidence.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/proofline
trap 'rm -rf "$(dirname "$bin")"' EXIT
echo "building proofline…"
go build -o "$bin" ./cmd/proofline

verify() { # name, expected exit code, args…
  local name=$1 want=$2; shift 2
  local out code=0
  out=$("$bin" verify "$@") || code=$?
  local status codes
  status=$(printf '%s' "$out" | sed -n 's/^  "status": "\(.*\)",$/\1/p')
  codes=$(printf '%s' "$out" | sed -n 's/^      "code": "\(.*\)",$/\1/p' | sort -u | paste -sd, -)
  printf '%-34s exit %d  %-16s %s\n' "$name" "$code" "$status" "$codes"
  if [ "$code" != "$want" ]; then
    echo "demo: $name exited $code, expected $want" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
}

echo
echo "Real reports recorded on hardware, each with the policy written for it (at 2026-06-01):"
for f in tdx-v4-spr tdx-v5 tdx-v4-gcp snp-milan-v2; do
  verify "real/$f" 0 --evidence "testdata/real/$f/evidence.json" --policy "testdata/real/$f/policy.yaml" --at 2026-06-01T00:00:00Z
done
echo
echo "The real SEV-SNP report under the default policy (DEBUG is allowed in its guest policy):"
verify "real/snp-milan-v2 (default policy)" 1 --evidence testdata/real/snp-milan-v2/evidence.json --at 2026-06-01T00:00:00Z
echo
# The nonce the fake fixtures were made for, as the verifier that issued it would pass it.
nonce=a78oMKgPAXCJ8vrp9KibBA07KJ9ykpLewyGkAei13Js=
echo "Full path with the fake vendor PKIs: chain, collateral, CRLs, TCB status, QE identity, policy, nonce:"
for f in tdx-v4 tdx-v5 snp-milan-vcek snp-genoa-vlek; do
  d=testdata/fake/$f
  verify "fake/$f" 0 --evidence "$d/evidence.json" --policy "$d/policy.yaml" --collateral "$d/collateral" --roots "$d/roots" --at 2026-11-24T00:00:00Z --nonce "$nonce"
done
echo
echo "The same evidence without the verifier's nonce, after its collateral expired, and with another nonce:"
d=testdata/fake/tdx-v4
verify "fake/tdx-v4 without --nonce" 0 --evidence "$d/evidence.json" --policy "$d/policy.yaml" --collateral "$d/collateral" --roots "$d/roots" --at 2026-11-24T00:00:00Z
verify "fake/tdx-v4 at 2027-06-01" 1 --evidence "$d/evidence.json" --policy "$d/policy.yaml" --collateral "$d/collateral" --roots "$d/roots" --at 2027-06-01T00:00:00Z --nonce "$nonce"
verify "fake/tdx-v4 with another nonce" 1 --evidence "$d/evidence.json" --policy "$d/policy.yaml" --collateral "$d/collateral" --roots "$d/roots" --at 2026-11-24T00:00:00Z --nonce AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
echo
echo "demo: all verdicts as expected. One full result:"
"$bin" verify --evidence testdata/fake/tdx-v4/evidence.json --policy testdata/fake/tdx-v4/policy.yaml --collateral testdata/fake/tdx-v4/collateral --roots testdata/fake/tdx-v4/roots --at 2026-11-24T00:00:00Z --nonce "$nonce"
