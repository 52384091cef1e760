#!/usr/bin/env bash
# Checks that the published crates build with the minimum supported Rust
# version (`rust-version` in Cargo.toml). Uses `cargo msrv verify` when
# cargo-msrv is installed, else `cargo check` on that toolchain when rustup
# has it; says it is skipped otherwise (exit status 0).
#
# The `postgres` feature is left out: sqlx 0.9 needs a newer Rust (1.94) than
# the rest. Cargo.lock may hold versions newer than the MSRV allows (uuid, through
# moka), so the check resolves a lockfile of its own, preferring versions that
# fit `rust-version`, and puts the project's back afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
check=(cargo check -p stratacache -p stratacache-http -p stratacache-cli
    --features stratacache/tls,stratacache-cli/tls)

if cargo msrv --version >/dev/null 2>&1; then
    run=(cargo msrv verify --rust-version "$msrv" --)
elif command -v rustup >/dev/null 2>&1 && rustup run "$msrv" cargo --version >/dev/null 2>&1; then
    run=(rustup run "$msrv")
else
    echo "msrv: skipped — neither cargo-msrv nor the Rust $msrv toolchain is installed" \
        "(rustup toolchain install $msrv, or cargo install cargo-msrv)"
    exit 0
fi

backup=$(mktemp)
cp Cargo.lock "$backup"
trap 'cp "$backup" Cargo.lock; rm -f "$backup"' EXIT
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile
echo "msrv: ${run[*]} ${check[*]} (Rust $msrv)"
"${run[@]}" "${check[@]}"
