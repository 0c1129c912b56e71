#!/usr/bin/env bash
# The main job, locally: bring the stack up, run one production from events/briefs/tides.json
# through every phase while watching it, show its final state and download what it made
# (images, audio) from the stack's bucket; then run a coding-agent job (plan, approval,
# implement, pull request) on the same stack, and bring the stack down.
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

# The second pipeline on the same stack: a coding-agent job against the local
# source-control host (GitHub's API, repository acme/widgets). An admin allows the account
# its repositories first (nothing is allowed until then); the plan waits for approval.
say "shepherd account acme --repositories 'acme/*'"
"$SHEPHERD" account acme --repositories 'acme/*'
JOB="$ROOT/events/jobs/gadgets.json"
say "shepherd start --pipeline coding $JOB"
JOB_ID="$("$SHEPHERD" --json start --pipeline coding "$JOB" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
say "shepherd watch $JOB_ID (stops at the plan's approval)"
"$SHEPHERD" watch "$JOB_ID" || true
"$SHEPHERD" --json show "$JOB_ID" | python3 -c 'import json, sys; p = json.load(sys.stdin); print("plan:", json.dumps(p["outputs"]["plan"], indent=2))'
say "shepherd approve $JOB_ID"
"$SHEPHERD" approve "$JOB_ID"
"$SHEPHERD" watch "$JOB_ID" || true
say "shepherd show $JOB_ID"
"$SHEPHERD" show "$JOB_ID"
"$SHEPHERD" --json show "$JOB_ID" | python3 -c 'import json, sys; p = json.load(sys.stdin)["outputs"]["pull_request"]; print("pull request #%s: %s (branch %s)" % (p["number"], p["url"], p["branch"]))'
