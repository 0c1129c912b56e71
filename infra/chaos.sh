#!/usr/bin/env bash
# The chaos benchmark (not a test): builds it, starts the emulator, runs N productions on
# the local stack with faults injected at random, stops the emulator. Extra arguments go to
# shepherd-chaos (e.g. --productions 50 --slow 0.02 --drops 0.02 --crashes 5 --duplicates 0.05).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
say "building shepherd-chaos (release)"
cargo build --release -p shepherd-local --bin shepherd-chaos
trap emulator_down EXIT
emulator_up
"$ROOT/target/release/shepherd-chaos" --endpoint "$AWS_ENDPOINT_URL" "$@"
