#!/usr/bin/env bash
# The release build we ship and benchmark: profile-guided. Builds fulcrum instrumented, runs
# the training load of examples/pgo_train.rs through it (127.0.0.1 only, about half a minute),
# merges what it recorded into a profile, and builds fulcrum again guided by it:
#
#   target/pgo/release/fulcrum
#
# The profile is made fresh by every run, from the sources and toolchain at hand, so it never
# goes stale and nothing is committed. A plain `cargo build --release` is not guided (1.12
# against 0.96 of HAProxy's CPU per keep-alive request in paired benchmark runs). The
# Dockerfile's from-source build runs this script; `../shared/bench/compare --fulcrum
# target/pgo/release/fulcrum` measures it.
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

data=$PWD/target/pgo-gen/data
profile=$PWD/target/pgo-gen/fulcrum.profdata
rm -rf "$data"
mkdir -p "$data"

echo "1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$data" \
    cargo build --release --locked --bin fulcrum --target-dir target/pgo-gen
# Build scripts ran instrumented too: only fulcrum's own runs may teach the profile.
rm -f "$data"/*.profraw

echo "2/3 training"
cargo run --release --locked --example pgo_train -- target/pgo-gen/release/fulcrum
"$profdata" merge -o "$profile" "$data"

echo "3/3 optimized build"
# cargo does not see a new profile as a change: build every crate again.
rm -rf target/pgo/release
RUSTFLAGS="-Cprofile-use=$profile" \
    cargo build --release --locked --bin fulcrum --target-dir target/pgo
echo "built target/pgo/release/fulcrum"
