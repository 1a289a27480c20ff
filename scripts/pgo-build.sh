#!/usr/bin/env bash
# Refreshes the profile that release builds are guided by (pgo/fulcrum.profdata, applied by
# scripts/rustc-pgo): build fulcrum instrumented, run the training load of
# examples/pgo_train.rs through it (127.0.0.1 only, about half a minute), merge what it
# recorded into the profile, then rebuild the release binary with it: target/release/fulcrum.
# Run it after changes to the hot paths: functions changed since the profile was made get
# no guidance until then (the build still works; rustc warns of each profile mismatch).
#
# It needs llvm-profdata of the toolchain's own LLVM: `rustup component add llvm-tools`.
set -euo pipefail
cd "$(dirname "$0")/.."

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "llvm-profdata is missing: run 'rustup component add llvm-tools'" >&2
    exit 1
fi

data=$PWD/target/pgo/data
rm -rf "$data"
mkdir -p "$data"

echo "1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$data" \
    cargo build --release --locked --bin fulcrum --target-dir target/pgo/gen
# Build scripts ran instrumented too: only fulcrum's own runs may teach the profile.
rm -f "$data"/*.profraw

echo "2/3 training"
cargo run --release --locked --example pgo_train -- target/pgo/gen/release/fulcrum
mkdir -p pgo
"$profdata" merge -o pgo/fulcrum.profdata "$data"
rustc -V > pgo/rustc-version

echo "3/3 optimized build"
# cargo does not see the profile change: rebuild every crate of the release profile.
cargo clean --release
cargo build --release --locked --bin fulcrum
echo "built target/release/fulcrum with the new pgo/fulcrum.profdata"
