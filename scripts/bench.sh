#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: criterion on the hot path, the allocation count,
# then the peer harness suite (metrics-relay, vmagent and Prometheus in agent
# mode in one run; about 30 minutes on 2 cores), then the fleet-scale cases
# (scripts/bench_fleet.py: 1 M series, 200 targets, catch-up after a
# 10-minute outage; about an hour).
# Loopback only. SKIP_SUITE=1 / SKIP_FLEET=1 reuse the newest results files;
# SUITE_REPS, FLEET_CASES and FLEET_OUTAGE shorten a run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Today's peers, built from their Go modules (scripts/peers.sh, cached): the
# harness takes vmagent, Prometheus (agent mode) and the VictoriaMetrics
# receiver from these variables; BENCHMARKS.md names their versions.
# PEERS=debian measures Debian's packages (vmagent 1.79, Prometheus 2.42)
# instead.
if [ "${PEERS:-current}" = current ]; then
  peers=$(scripts/peers.sh)
  peer() { echo "$peers" | sed -n "s/^$1=//p"; }
  export VMAGENT_BIN PROMETHEUS_BIN VICTORIA_METRICS_BIN
  VMAGENT_BIN=$(peer vmagent)
  PROMETHEUS_BIN=$(peer prometheus)
  VICTORIA_METRICS_BIN=$(peer victoria-metrics)
fi
# The commit measured (before BENCHMARKS.md itself is rewritten).
export BENCH_COMMIT=${BENCH_COMMIT:-$(git describe --always --dirty)}
cargo build --release --locked --bin metrics-relay
rm -rf target/criterion
cargo bench --locked --bench hot_path -- --warm-up-time 1 --measurement-time 3 >/dev/null
mkdir -p bench-results
cargo bench --locked --bench alloc_count > bench-results/alloc_count.txt
export METRICS_RELAY_BIN=$PWD/target/release/metrics-relay
mkdir -p bench-results
if [ "${SKIP_SUITE:-0}" = 1 ]; then
  out=$(ls -t bench-results/suite-*.jsonl | head -n 1)
else
  out=bench-results/suite-$(date -u +%Y%m%d-%H%M).jsonl
  python3 ../shared/bench/run.py setup
  # Let the build's and criterion's file writes reach the disk first: the
  # kernel's writeback would otherwise compete with the first runs measured.
  sync
  sleep 20
  # Three repeats per case (the harness default is two): a median of three
  # is steadier on a noisy machine.
  python3 ../shared/bench/run.py suite --agents metrics-relay,vmagent,prom-agent \
    --reps "${SUITE_REPS:-3}" --out "$out"
fi
if [ "${SKIP_FLEET:-0}" = 1 ]; then
  fleet=$(ls -t bench-results/fleet-*.jsonl | head -n 1)
else
  fleet=bench-results/fleet-$(date -u +%Y%m%d-%H%M).jsonl
  # FLEET_CASES (comma-separated) and FLEET_OUTAGE (seconds) narrow the
  # hour-long fleet run; BENCHMARKS.md shows the cases that were run.
  python3 scripts/bench_fleet.py "$fleet" --outage "${FLEET_OUTAGE:-600}" \
    --cases "${FLEET_CASES:-fleet-50x20000,fleet-200x5000,catchup-50x20000}"
fi
python3 scripts/benchmarks_md.py "$out" target/criterion bench-results/alloc_count.txt "$fleet" > BENCHMARKS.md.new
mv BENCHMARKS.md.new BENCHMARKS.md
echo "BENCHMARKS.md written from $out"
