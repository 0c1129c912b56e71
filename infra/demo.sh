#!/usr/bin/env bash
# The main job, locally: bring the stack up, run one production from events/briefs/tides.json
# through every phase while watching it, show its final state, and bring the stack down.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BRIEF="${1:-$ROOT/events/briefs/tides.json}"
trap 'bash "$ROOT/infra/stack.sh" down' EXIT
bash "$ROOT/infra/stack.sh" up
export AWS_ENDPOINT_URL="http://127.0.0.1:$EMULATOR_PORT" SHEPHERD_STACK="${SHEPHERD_STACK:-shepherd-local}"
say "shepherd start $BRIEF --watch"
"$ROOT/target/debug/shepherd" start "$BRIEF" --watch
