#!/usr/bin/env bash
# Long runs that the test command leaves out (each takes minutes):
# - the receiver outage of tests/it/durability.rs for two minutes instead of
#   ten scrapes (METRICS_RELAY_OUTAGE_SECS), against a real Prometheus;
# - scripts/outage-rss.sh: the agent's RSS through a five-minute outage at
#   20,000 series.
# Run scripts/test.sh first (it installs what these need).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> a 120 s receiver outage loses nothing (tests/it/durability.rs)"
METRICS_RELAY_OUTAGE_SECS=${METRICS_RELAY_OUTAGE_SECS:-120} \
  cargo test --locked --test it -- --exact durability::receiver_outage_loses_nothing
echo "==> RSS through a 5-minute outage (scripts/outage-rss.sh)"
scripts/outage-rss.sh
