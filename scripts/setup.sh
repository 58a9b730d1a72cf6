#!/usr/bin/env bash
# Installs what Eddy needs on a Debian machine that has only the Rust toolchain, and does
# nothing when it is already there (a check of a few milliseconds), so other scripts call it
# first every time.
#
#   scripts/setup.sh build    Debian's RocksDB and libclang: enough to build and run `eddy`
#   scripts/setup.sh tests    also PostgreSQL, Chromium and its driver, cargo-nextest and the
#                             tests' Kafka broker (tansu, built once into ~/.cache/eddy/tools)
#
# Prints nothing when there is nothing to do; uses sudo when not run as root.
set -euo pipefail

what="${1:-build}"
case "$what" in
    build) packages="librocksdb-dev libclang-dev" ;;
    tests) packages="librocksdb-dev libclang-dev postgresql chromium chromium-driver" ;;
    *) echo "usage: $0 build|tests" >&2; exit 2 ;;
esac

command -v cargo >/dev/null || {
    echo "cargo is required: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
}

# RocksDB is linked from Debian's package (.cargo/config.toml) instead of compiling its C++ for
# ten minutes; bindgen needs libclang. The tests start their own PostgreSQL servers (initdb on
# a temporary directory) and load the dashboard in headless Chromium.
# shellcheck disable=SC2086
if ! dpkg -s $packages >/dev/null 2>&1; then
    echo "== installing Debian packages: $packages" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi

[ "$what" = tests ] || exit 0

command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

# The tests' Kafka broker: tansu, a Kafka-compatible broker in Rust (docs/ecommerce.md says
# why). Memory storage for the tests; SQLite storage (libsql, bundled C built with gcc) for the
# chaos harness, whose broker restarts keep their data. Built once with a light release
# profile (about 20 minutes on 2 cores); its build directory is kept so an upgrade rebuilds
# only what changed.
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
tools="$HOME/.cache/eddy/tools"
stamp="$tools/tansu.features"
if ! "$tools/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION" \
    || [ "$(cat "$stamp" 2>/dev/null)" != "$TANSU_FEATURES" ]; then
    echo "== building tansu $TANSU_VERSION ($TANSU_FEATURES), the tests' Kafka broker" >&2
    CARGO_TARGET_DIR="$HOME/.cache/eddy/tansu-target" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
        --features "$TANSU_FEATURES" --root "$tools" --quiet --force
    echo "$TANSU_FEATURES" > "$stamp"
fi
