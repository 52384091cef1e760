#!/usr/bin/env bash
# The main job: the market service of the seed articles on PostgreSQL, driven
# by the same load with the cache off and then on, and the before/after table
# (latency, requests/s, database queries/s, hit rate). `market demo` makes
# sure Redis and PostgreSQL run (scripts/services.sh), migrates and seeds the
# `market` database if needed, and writes the table to target/market-demo.md.
# Extra arguments go to `market demo` (e.g. --quick, --scale 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >&2
exec cargo run --release -p market -- demo "$@"
