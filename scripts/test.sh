#!/usr/bin/env bash
# The whole test suite: unit, integration (single node, throwaway Cluster,
# Sentinel, outages), doc tests and examples' builds, against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo test --workspace "$@"
# The tool's rediss:// support is an opt-in feature, which no other crate of the
# workspace turns on: its tests run with the feature on.
cargo test -p stratacache-cli --features tls "$@"
