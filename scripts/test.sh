#!/usr/bin/env bash
# Runs every test of metrics-relay: formatting, lints, unit tests, the
# loopback integration tests and the end-to-end tests against real programs
# (Prometheus, VictoriaMetrics, the kubelet simulation), and the demo.
#
# Installs what the tests need when it is missing:
# - Debian packages: prometheus (2.42, the older receiver users still run:
#   the differential tests and a compatibility pass of the core end-to-end
#   cases run against it as well as against Prometheus 3),
#   openssl (RSA test keys), curl (the demo), ca-certificates (the image's
#   root filesystem in the kubelet simulation), faketime (a wall-clock step),
#   etcd-server and prometheus-node-exporter (real programs for the
#   differential test, tests/it/real_programs.rs), victoria-metrics (1.79,
#   the older VictoriaMetrics users still run: tests/it/formats.rs);
# - from the Go module proxy, through scripts/peers.sh (cached in
#   ~/.cache/metrics-relay-peers, a few minutes the first time): kustomize v5
#   (Debian's kubectl 1.20 cannot build deploy/), the current
#   VictoriaMetrics and vmagent, and Prometheus 3.
# The fault tests and the kubelet simulation need root (tmpfs and bind
# mounts, a mount namespace) and util-linux (prlimit, unshare, setpriv).
#
# It always ends with a `summary: N passed, M failed` line.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(faketime)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
if ((${#need[@]})); then
  echo "==> installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> peers and tools from their Go modules (scripts/peers.sh)"
peers=$(scripts/peers.sh)
peer() { echo "$peers" | sed -n "s/^$1=//p"; }
export KUSTOMIZE VICTORIA_METRICS_BIN VICTORIA_METRICS_OLD_BIN VMAGENT_BIN PROMETHEUS3_BIN PROMETHEUS2_BIN PROMETHEUS_BIN
KUSTOMIZE=$(peer kustomize)
VICTORIA_METRICS_BIN=$(peer victoria-metrics)
VICTORIA_METRICS_OLD_BIN=/usr/bin/victoria-metrics
VMAGENT_BIN=$(peer vmagent)
PROMETHEUS3_BIN=$(peer prometheus)
PROMETHEUS2_BIN=$(command -v prometheus)
# The receiver of the end-to-end tests: today's Prometheus. The
# differential tests run against both versions themselves; Debian's 2.42
# gets the compatibility pass below.
PROMETHEUS_BIN=${PROMETHEUS_BIN:-$PROMETHEUS3_BIN}
"$PROMETHEUS_BIN" --version 2>&1 | head -n 1
"$PROMETHEUS2_BIN" --version 2>&1 | head -n 1
"$VICTORIA_METRICS_BIN" --version 2>&1 | head -n 1
echo "VictoriaMetrics (Debian) $(dpkg-query -W -f '${Version}' victoria-metrics)"
"$KUSTOMIZE" version

log=$(mktemp)
summary() {
  local rc=$?
  # One closing line over every test binary (cargo prints one per binary).
  # A benchmark run as a check (alloc_count) has no test lines: its failure
  # counts as one.
  awk '/^test result:/ { p += $4; f += $6 } /^error: test failed, to rerun pass `--bench/ { f += 1 }
    END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
  echo "test.sh: exit $rc after $((SECONDS - t0)) s"
  rm -f "$log"
}
trap summary EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test (unit, integration, end-to-end, benches in test mode)"
failed=0
# Four test threads on two cores: most end-to-end tests wait on a scrape
# interval or a receiver, not on the CPU (the suite takes about half the
# time it takes with the default of one thread per core).
# (RUST_TEST_THREADS, not --test-threads: criterion's benches refuse it.)
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
cargo test --locked --all-targets --no-fail-fast 2>&1 | tee "$log" || failed=1

echo "==> compatibility pass: the core end-to-end cases against Debian's Prometheus 2.42"
PROMETHEUS_BIN=$PROMETHEUS2_BIN cargo test --locked --test it --no-fail-fast -- \
  e2e_prometheus:: durability:: pull::servicemonitor_style_prometheus_keeps_target_labels \
  faults::one_bad_timestamp_costs_no_other_target_its_data \
  dashboards::every_dashboard_query_returns_data 2>&1 | tee -a "$log" || failed=1
((failed == 0)) || { echo "tests failed"; exit 1; }

echo "==> the demo (scripts/demo.sh, debug build), and its failure when a port is taken"
PROFILE=debug AGG=127.0.0.1:26443 PROM=127.0.0.1:29090 RELAY=127.0.0.1:29464 scripts/demo.sh >"$log.demo" 2>&1 ||
  { cat "$log.demo"; echo "the demo failed"; exit 1; }
tail -n 1 "$log.demo"
python3 - <<'PY' || { echo "the demo did not fail loudly with its port taken"; exit 1; }
import os, socket, subprocess
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
port = s.getsockname()[1]
env = dict(os.environ, PROFILE="debug", AGG=f"127.0.0.1:{port}",
           PROM="127.0.0.1:29091", RELAY="127.0.0.1:29465")
r = subprocess.run(["scripts/demo.sh"], env=env, capture_output=True, text=True)
assert r.returncode != 0, "exit 0 with the aggregator's port taken"
assert "already in use" in r.stderr, r.stderr
print("demo with its port taken: exit", r.returncode, "-", r.stderr.splitlines()[0])
PY
rm -f "$log.demo"
