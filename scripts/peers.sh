#!/usr/bin/env bash
# Builds today's peers and test tools from their Go modules, at the pinned
# versions below (the newest the Go module proxy serves that build with this
# machine's Go, go1.26), into a cache outside the repository that is reused
# while the versions stay the same:
#
#   prometheus        Prometheus 3 (cmd/prometheus; built with -tags
#                     remove_all_sd: the cloud service discoveries left out,
#                     file and HTTP discovery kept; no web UI assets)
#   promtool          its promtool (cmd/promtool), next to it
#   victoria-metrics  VictoriaMetrics single-node
#   vmagent           vmagent
#   kustomize         kustomize v5 (the tests build deploy/ with it)
#
# Prints one NAME=PATH line per program on stdout (progress and timings go to
# stderr), so that a script can take the paths:
#   eval "$(scripts/peers.sh | sed 's/^\([a-z]*\)-\{0,1\}\([a-z]*\)=/PEER_\1\2=/')"
# or read them with `grep ^prometheus=`. The first build takes a few minutes
# on 2 cores (Prometheus is most of it); later runs print the cached paths at
# once. A failed build stops with Go's error. Cache: $METRICS_RELAY_PEERS, else
# ~/.cache/metrics-relay-peers.
set -euo pipefail

PROMETHEUS_MODULE_VERSION=v0.316.0   # Prometheus 3.16.0
PROMETHEUS_VERSION=3.16.0
VICTORIAMETRICS_VERSION=v1.151.0
KUSTOMIZE_VERSION=v5.8.2

CACHE=${METRICS_RELAY_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics-relay-peers}
command -v go >/dev/null 2>&1 || {
  echo "peers.sh: no Go toolchain (go) on PATH: it builds Prometheus 3, VictoriaMetrics and kustomize from their Go modules" >&2
  exit 1
}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$CACHE"
say() { echo "peers.sh: $*" >&2; }

# build NAME VERSION-DIR COMMAND...: runs COMMAND in a fresh wrapper module
# unless $CACHE/VERSION-DIR/NAME exists; COMMAND writes the binary to $out.
build() {
  local name=$1 tag=$2; shift 2
  local dir="$CACHE/$tag"
  out="$dir/$name"
  if [ -x "$out" ]; then
    say "$name: cached ($out)"
  else
    local t0=$SECONDS wrap log
    say "$name: building $tag (a few minutes the first time)"
    wrap=$(mktemp -d)
    log="$wrap.log"
    mkdir -p "$dir"
    if ! (cd "$wrap" && go mod init peers && "$@") >"$log" 2>&1; then
      say "$name: the build failed:"
      cat "$log" >&2
      exit 1
    fi
    rm -rf "$wrap" "$log"
    [ -x "$out" ] || { say "$name: the build made no binary"; exit 1; }
    say "$name: built in $((SECONDS - t0)) s"
  fi
  echo "$name=$out"
}

prometheus() {
  local cmd=$1
  go get "github.com/prometheus/prometheus/cmd/$cmd@$PROMETHEUS_MODULE_VERSION"
  go build -trimpath -tags remove_all_sd,netgo \
    -ldflags "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    -o "$out" "github.com/prometheus/prometheus/cmd/$cmd"
}
victoria() {
  local app=$1
  go get "github.com/VictoriaMetrics/VictoriaMetrics/app/$app@$VICTORIAMETRICS_VERSION"
  go build -trimpath \
    -ldflags "-X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=$app-$VICTORIAMETRICS_VERSION" \
    -o "$out" "github.com/VictoriaMetrics/VictoriaMetrics/app/$app"
}
kustomize() {
  GOBIN=$(dirname "$out") go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

build prometheus "prometheus-$PROMETHEUS_MODULE_VERSION" prometheus prometheus
build promtool "prometheus-$PROMETHEUS_MODULE_VERSION" prometheus promtool
build victoria-metrics "victoriametrics-$VICTORIAMETRICS_VERSION" victoria victoria-metrics
build vmagent "victoriametrics-$VICTORIAMETRICS_VERSION" victoria vmagent
build kustomize "kustomize-$KUSTOMIZE_VERSION" kustomize
