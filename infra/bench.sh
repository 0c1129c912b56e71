#!/usr/bin/env bash
# The benchmark (not a test): builds release binaries, starts the emulator, runs
# shepherd-bench, stops the emulator. Extra arguments go to shepherd-bench
# (e.g. --productions 50 --cold-starts 30, --pipeline coding --transitions-only).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
say "building release binaries (the bootstrap, the API, hello-world baseline, benchmark)"
cargo build --release -p bootstrap -p api -p bench-hello -p shepherd-local \
  --bin shepherd-bench --bin bootstrap --bin api --bin bench-hello
trap emulator_down EXIT
emulator_up
"$ROOT/target/release/shepherd-bench" --endpoint "$AWS_ENDPOINT_URL" --bin-dir target/release "$@"
