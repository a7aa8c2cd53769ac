#!/usr/bin/env bash
# The 30-second demo: a local stand-in for the ACK One metrics aggregator
# (HTTPS, client certificate required, a realistic control-plane page), a real
# Prometheus as the remote-write receiver, and metrics-relay between them.
# Everything listens on 127.0.0.1 only. Installs Debian's prometheus if needed.
#
#   scripts/demo.sh            # run it, print what arrived, stop everything
#   KEEP=1 scripts/demo.sh     # leave it running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."

AGG=${AGG:-127.0.0.1:16443}
PROM=${PROM:-127.0.0.1:19090}
RELAY=${RELAY:-127.0.0.1:19464}

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "==> installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> building metrics-relay and the demo aggregator (release; the first build takes about 3 minutes on 2 cores, later ones seconds)"
cargo build --release --locked --bin metrics-relay --example aggregator

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "==> starting the mTLS aggregator on https://$AGG/metrics?hosting=true"
target/release/examples/aggregator "$work/pki" "$AGG" >"$work/aggregator.log" 2>&1 &
pids+=($!)

echo "==> starting Prometheus (remote-write receiver) on http://$PROM"
printf 'global:\n  scrape_interval: 1h\n' >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="$PROM" --web.enable-remote-write-receiver >"$work/prometheus.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do [ -f "$work/pki/client.key" ] && break; sleep 0.1; done
cat >"$work/relay.yml" <<YAML
global:
  scrape_interval: 5s
  external_labels: {cluster: demo}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    params: {hosting: ["true"]}
    tls_config:
      ca_file: $work/pki/ca.crt
      cert_file: $work/pki/client.crt
      key_file: $work/pki/client.key
      server_name: kubernetes
    static_configs:
      - targets: ["$AGG"]
remote_write:
  - url: http://$PROM/api/v1/write
    queue_config: {batch_send_deadline: 1s}
YAML
target/release/metrics-relay check --config "$work/relay.yml"

echo "==> starting metrics-relay (admin on http://$RELAY)"
target/release/metrics-relay run --config "$work/relay.yml" --data-dir "$work/data" \
  --listen-address "$RELAY" >"$work/relay.log" 2>&1 &
pids+=($!)

q() { curl -fsS --get "http://$PROM/api/v1/query" --data-urlencode "query=$1"; echo; }
for _ in $(seq 150); do
  if q 'up{job="ack-control-plane"}' 2>/dev/null | grep -q '"1"\]'; then break; fi
  sleep 0.2
done

echo
echo "==> the agent's view of its target (GET http://$RELAY/targets?format=json; HTML without it)"
curl -fsS "http://$RELAY/targets?format=json"
echo
echo "==> Prometheus: up{job=\"ack-control-plane\"}"
q 'up{job="ack-control-plane"}'
echo "==> Prometheus: count by (__name__) of what arrived, top 5"
q 'topk(5, count by (__name__) ({job="ack-control-plane"}))'
echo "==> Prometheus: sum(rate(apiserver_request_total[1m])) by (verb) (needs two scrapes)"
sleep 6
q 'sum by (verb) (rate(apiserver_request_total[1m]))'

if [ "${KEEP:-0}" = 1 ]; then
  echo "running; Prometheus UI at http://$PROM, agent at http://$RELAY/metrics. Ctrl-C stops."
  wait
fi
