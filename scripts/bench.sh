#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: criterion on the hot path, the allocation count,
# then the peer harness suite (metrics-relay, vmagent and Prometheus in agent
# mode in one run; about 30 minutes on 2 cores), then the fleet-scale cases
# (scripts/bench_fleet.py: 1 M series, 200 targets, catch-up after a
# 10-minute outage; about an hour).
# Then the bytes per sample: the harness's null sink for 1.0 (snappy, zstd)
# against vmagent and Prometheus, scripts/bench_bytes.py for 2.0 against
# Prometheus in agent mode, examples/wire_bytes per codec and format.
# Loopback only. SKIP_SUITE=1 / SKIP_FLEET=1 / SKIP_BYTES=1 reuse the newest results files;
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
if [ "${SKIP_BYTES:-0}" = 1 ]; then
  BYTES_NULL=$(ls -t bench-results/bytes-null-*.jsonl | head -n 1)
  BYTES_V2=$(ls -t bench-results/bytes-v2-*.jsonl | head -n 1)
else
  stamp=$(date -u +%Y%m%d-%H%M)
  BYTES_NULL=bench-results/bytes-null-$stamp.jsonl
  BYTES_V2=bench-results/bytes-v2-$stamp.jsonl
  relay="$METRICS_RELAY_BIN run --config {custom_config} --data-dir {data_dir} --listen-address {listen_addr}"
  python3 ../shared/bench/run.py run --agent metrics-relay --case auto-50x2000 --sink null \
    --cmd "$relay" --config-template scripts/bench-templates/remote-write-auto.yml.tmpl --out "$BYTES_NULL"
  python3 ../shared/bench/run.py run --agent vmagent --case default-50x2000 --sink null --out "$BYTES_NULL"
  python3 ../shared/bench/run.py run --agent metrics-relay --case default-50x2000 --sink null --out "$BYTES_NULL"
  python3 ../shared/bench/run.py run --agent prom-agent --case default-50x2000 --sink null --out "$BYTES_NULL"
  python3 scripts/bench_bytes.py "$BYTES_V2"
fi
WIRE_BYTES=bench-results/wire_bytes.txt
harness_pages=$(ls -d "${BENCH_WORKDIR:-${TMPDIR:-/tmp}/agentbench}"/targets/g*-n50-m2000-v4/* 2>/dev/null | head -n 1)
HARNESS_PAGES=$harness_pages cargo run --release --locked --example wire_bytes > "$WIRE_BYTES"
export BYTES_NULL BYTES_V2 WIRE_BYTES
export BYTES_COMMIT=${BYTES_COMMIT:-$(git describe --always --dirty)}
python3 scripts/benchmarks_md.py "$out" target/criterion bench-results/alloc_count.txt "$fleet" > BENCHMARKS.md.new
mv BENCHMARKS.md.new BENCHMARKS.md
echo "BENCHMARKS.md written from $out"
