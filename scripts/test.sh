#!/usr/bin/env bash
# Runs every test of metrics-relay: formatting, lints, unit tests, loopback
# integration tests and the end-to-end tests against a real Prometheus.
# Installs what the tests need (Debian's `prometheus`, `openssl` and
# `kubernetes-client` for `kubectl kustomize`, `ca-certificates` for the image's
# root filesystem in the kubelet simulation) when missing. The fault tests
# and the kubelet simulation need root (tmpfs and bind mounts, a mount
# namespace) and util-linux (`prlimit`, `unshare`, `setpriv`), both on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
# The replica tests deduplicate in a real VictoriaMetrics.
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
# The kubelet simulation builds the image's root filesystem with its CA bundle.
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if ((${#need[@]})); then
  echo "==> installing ${need[*]} (prometheus: the end-to-end receiver; victoria-metrics: deduplication of replicas; openssl: RSA test keys; kubectl: kustomize)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The package may start its own service on :9090; the tests use their own
# loopback ports and start their own Prometheus, so it is left alone.
prometheus --version 2>&1 | head -n 1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test (unit, integration, end-to-end, benches in test mode)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
