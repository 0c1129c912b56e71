#!/usr/bin/env bash
# The main job, locally: bring the stack up, run one production from events/briefs/tides.json
# through every phase while watching it, show its final state and download what it made
# (images, audio) from the stack's bucket, and bring the stack down.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BRIEF="${1:-$ROOT/events/briefs/tides.json}"
trap 'bash "$ROOT/infra/stack.sh" down' EXIT
bash "$ROOT/infra/stack.sh" up
# The local admin's keys: IAM is enforced, as in AWS.
source "$ADMIN_ENV"
export AWS_ENDPOINT_URL="http://127.0.0.1:$EMULATOR_PORT" SHEPHERD_STACK="${SHEPHERD_STACK:-shepherd-local}"
SHEPHERD="$ROOT/target/debug/shepherd"
say "shepherd start $BRIEF"
ID="$("$SHEPHERD" --json start "$BRIEF" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
say "shepherd watch $ID"
"$SHEPHERD" watch "$ID" || true
say "shepherd show $ID"
"$SHEPHERD" show "$ID"
say "shepherd artifacts $ID --download .local/artifacts/$ID"
"$SHEPHERD" artifacts "$ID" --download "$LOCAL/artifacts/$ID"
say "the artifacts are in the stack's bucket (keys above) and copied to .local/artifacts/$ID"
