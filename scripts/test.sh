#!/usr/bin/env bash
# The whole test suite: unit, integration (single node, throwaway Cluster,
# Sentinel, outages), doc tests and examples' builds, against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo test --workspace "$@"
