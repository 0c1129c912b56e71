#!/usr/bin/env bash
# The benchmark (not a test): builds release binaries, starts the emulator, runs
# shepherd-bench, stops the emulator. Extra arguments go to shepherd-bench
# (e.g. --productions 50 --cold-starts 30, --pipeline coding --transitions-only).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
say "building release binaries (functions, hello-world baseline, benchmark)"
cargo build --release -p brief -p script -p assets -p voice -p publish -p plan -p implement \
  -p pull-request -p audit-projector -p sweeper -p alarm-ingest -p api -p webhook-fanout \
  -p webhook-deliver -p bench-hello -p shepherd-local --bin shepherd-bench --bin brief \
  --bin script --bin assets --bin voice --bin publish --bin plan --bin implement \
  --bin pull-request --bin audit-projector --bin sweeper --bin alarm-ingest --bin api \
  --bin webhook-fanout --bin webhook-deliver --bin bench-hello
trap emulator_down EXIT
emulator_up
"$ROOT/target/release/shepherd-bench" --endpoint "$AWS_ENDPOINT_URL" --bin-dir target/release "$@"
