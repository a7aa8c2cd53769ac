#!/usr/bin/env bash
# The 30-second demo: a local stand-in for the ACK One metrics aggregator
# (HTTPS, client certificate required, a realistic control-plane page, and a
# kubeconfig holding the client certificate, as a cluster's does), a real
# Prometheus as the remote-write receiver, and metrics-relay between them,
# reading that kubeconfig. Everything listens on 127.0.0.1 only. Installs
# Debian's prometheus and curl if needed.
#
#   scripts/demo.sh            # run it, print what arrived, stop everything
#   KEEP=1 scripts/demo.sh     # leave it running until Ctrl-C
#   PROFILE=debug scripts/demo.sh   # the debug build (what the tests build)
#
# It fails loudly: a port in use, a process that does not start or dies, or
# no sample arriving ends it with exit status 1 and the logs shown (and kept).
set -euo pipefail
cd "$(dirname "$0")/.."

AGG=${AGG:-127.0.0.1:16443}
PROM=${PROM:-127.0.0.1:19090}
RELAY=${RELAY:-127.0.0.1:19464}
PROFILE=${PROFILE:-release}

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "==> installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
pids=()
failed=0
fail() {
  echo "demo FAILED: $*" >&2
  for f in "$work"/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f (last 20 lines)" >&2
    tail -n 20 "$f" >&2
  done
  echo "(logs kept in $work)" >&2
  failed=1
  exit 1
}
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$failed" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

# A port already in use would make a process exit at once (or, worse, the
# demo talk to something else): refuse before starting anything.
for hp in "$AGG" "$PROM" "$RELAY"; do
  if (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null; then
    fail "$hp is already in use (set AGG, PROM or RELAY to free HOST:PORTs)"
  fi
done

flag=--release; dir=release
[ "$PROFILE" = release ] || { flag=""; dir=debug; }
echo "==> building metrics-relay and the demo aggregator ($PROFILE; the first release build takes about 3 minutes on 2 cores, later ones seconds)"
cargo build $flag --locked --bin metrics-relay --example aggregator
bin=target/$dir/metrics-relay

# Starts "$@" in the background, logging to $work/$name.log.
start() {
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  eval "${name}_pid=$!"
}
# Waits until "$2" succeeds (up to 20 s), failing if process $1 died first.
wait_for() {
  local name=$1 check=$2 pid
  eval "pid=\$${name}_pid"
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || fail "$name exited at start"
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$name did not become ready within 20 s"
}

echo "==> starting the mTLS aggregator on https://$AGG/metrics?hosting=true"
start aggregator "target/$dir/examples/aggregator" "$work/pki" "$AGG"
wait_for aggregator "[ -f '$work/pki/kubeconfig' ]"

echo "==> starting Prometheus (remote-write receiver: --web.enable-remote-write-receiver) on http://$PROM"
printf 'global:\n  scrape_interval: 1h\n' >"$work/prometheus.yml"
start prometheus prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="$PROM" --web.enable-remote-write-receiver
wait_for prometheus "curl -fsS http://$PROM/-/ready"

cat >"$work/relay.yml" <<YAML
global:
  scrape_interval: 5s
  external_labels: {cluster: demo}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    params: {hosting: ["true"]}
    tls_config:
      # CA, client certificate and key from the cluster's kubeconfig.
      kubeconfig: $work/pki/kubeconfig
      server_name: kubernetes
    static_configs:
      - targets: ["$AGG"]
remote_write:
  - url: http://$PROM/api/v1/write
    queue_config: {batch_send_deadline: 1s}
YAML
"$bin" check --config "$work/relay.yml" || fail "metrics-relay check refused the demo config"

echo "==> starting metrics-relay (admin on http://$RELAY)"
start relay "$bin" run --config "$work/relay.yml" --data-dir "$work/data" --listen-address "$RELAY"
wait_for relay "curl -fsS http://$RELAY/healthz"

q() { curl -fsS --get "http://$PROM/api/v1/query" --data-urlencode "query=$1"; echo; }
up=0
for _ in $(seq 150); do
  kill -0 "$relay_pid" 2>/dev/null || fail "metrics-relay exited"
  if q 'up{job="ack-control-plane"}' 2>/dev/null | grep -q '"1"\]'; then up=1; break; fi
  sleep 0.2
done
[ "$up" = 1 ] || fail "no up == 1 for the aggregator in Prometheus after 30 s"

echo
echo "==> the agent's view of its target (GET http://$RELAY/targets?format=json; HTML without it)"
curl -fsS "http://$RELAY/targets?format=json"
echo
echo "==> Prometheus: up{job=\"ack-control-plane\"}"
q 'up{job="ack-control-plane"}'
echo "==> Prometheus: count by (__name__) of what arrived, top 5"
q 'topk(5, count by (__name__) ({job="ack-control-plane"}))'
echo "==> Prometheus: sum(rate(apiserver_request_total[1m])) by (verb) (needs two scrapes)"
rate=""
for _ in $(seq 100); do
  rate=$(q 'sum by (verb) (rate(apiserver_request_total[1m]))')
  case "$rate" in *'"verb"'*) break ;; esac
  sleep 0.2
done
echo "$rate"
case "$rate" in *'"verb"'*) ;; *) fail "no rate after two scrapes" ;; esac

if [ "${KEEP:-0}" = 1 ]; then
  echo "running; Prometheus UI at http://$PROM, agent at http://$RELAY/metrics. Ctrl-C stops."
  wait
fi
echo "==> demo OK"
