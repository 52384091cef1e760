#!/usr/bin/env bash
# The main job: make sure Redis and PostgreSQL run, then show the cache at work
# against a real Redis — misses, L1 and L2 hits, a stampede, and a Redis
# outage survived.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo run --release -p stratacache --example tour
