#!/usr/bin/env bash
# A profile-guided release build of fulcrum: build it instrumented, run the training load of
# examples/pgo_train.rs through it (127.0.0.1 only, about half a minute), then build it again
# with what it learned. The result is target/pgo/release/fulcrum.
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
"$profdata" merge -o target/pgo/fulcrum.profdata "$data"

echo "3/3 optimized build"
RUSTFLAGS="-Cprofile-use=$PWD/target/pgo/fulcrum.profdata" \
    cargo build --release --locked --bin fulcrum --target-dir target/pgo
echo "built target/pgo/release/fulcrum"
