#!/usr/bin/env bash
# Memory through a receiver outage: metrics-relay scrapes one mTLS target of
# ~20,000 series every 5 s into a real Prometheus; after a steady-state phase
# Prometheus is stopped for OUTAGE seconds, then restarted. Prints the agent's
# RSS (from /proc) in steady state and at its peak during the outage, the
# ratio, and whether the backlog drained. Loopback only.
#
#   scripts/outage-rss.sh                 # 60 s steady, 300 s outage, 20000 series
#   STEADY=30 OUTAGE=60 SERIES=5000 scripts/outage-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEADY=${STEADY:-60}; OUTAGE=${OUTAGE:-300}; SERIES=${SERIES:-20000}
AGG=127.0.0.1:26443; PROM=127.0.0.1:29090; RELAY=127.0.0.1:29464

cargo build --release --locked --quiet --bin metrics-relay --example aggregator
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/aggregator "$work/pki" "$AGG" "$SERIES" >/dev/null 2>&1 & pids+=($!)
start_prom() {
  printf 'global:\n  scrape_interval: 1h\n' >"$work/prom.yml"
  prometheus --config.file="$work/prom.yml" --storage.tsdb.path="$work/prom" \
    --web.listen-address="$PROM" --web.enable-remote-write-receiver >>"$work/prom.log" 2>&1 &
  prom_pid=$!
}
start_prom
for _ in $(seq 100); do [ -f "$work/pki/client.key" ] && break; sleep 0.1; done
cat >"$work/relay.yml" <<YAML
global: {scrape_interval: 5s, scrape_timeout: 5s}
scrape_configs:
  - job_name: big
    scheme: https
    tls_config: {ca_file: $work/pki/ca.crt, cert_file: $work/pki/client.crt, key_file: $work/pki/client.key, server_name: kubernetes}
    static_configs: [{targets: ["$AGG"]}]
remote_write:
  - url: http://$PROM/api/v1/write
YAML
target/release/metrics-relay run --config "$work/relay.yml" --data-dir "$work/data" --listen-address "$RELAY" \
  --log-level warn >"$work/relay.log" 2>&1 & relay=$!; pids+=($relay)

rss() { awk '/^VmRSS/ {print $2}' "/proc/$relay/status"; }
sample_max() { # seconds -> max RSS (KiB) seen, sampled every second
  local max=0 v; for _ in $(seq "$1"); do v=$(rss); ((v > max)) && max=$v; sleep 1; done; echo "$max"; }

sleep 10 # first scrapes, connection set-up
steady=$(sample_max "$STEADY")
kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true
outage=$(sample_max "$OUTAGE")
queued=$(curl -fsS "http://$RELAY/metrics" | awk '/^metrics_relay_remote_write_queue_bytes/ {print $2}')
start_prom; pids+=($prom_pid)
drained=no
for _ in $(seq 120); do
  q=$(curl -fsS "http://$RELAY/metrics" | awk '/^metrics_relay_remote_write_queue_samples/ {print $2}')
  [ "${q:-1}" = 0 ] && { drained=yes; break; }; sleep 1
done
dropped=$(curl -fsS "http://$RELAY/metrics" | awk '/^metrics_relay_remote_write_samples_dropped_total/ {s += $2} END {print s + 0}')
echo "series=$SERIES steady_s=$STEADY outage_s=$OUTAGE"
echo "rss_steady_peak_kib=$steady rss_outage_peak_kib=$outage ratio=$(awk "BEGIN {printf \"%.3f\", $outage / $steady}")"
echo "queue_bytes_at_end_of_outage=$queued backlog_drained=$drained samples_dropped=$dropped"
