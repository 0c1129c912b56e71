#!/usr/bin/env bash
# The HTTP API's contract fuzzed: schemathesis (PyPI) reads the local stack's /openapi.json
# and sends generated requests, once with each role's token (viewer, operator, admin, stack
# operator) and once with none. It fails on any 5xx, an undocumented status code or content
# type, or an answer that breaks its schema (errors included). Bounded: examples per
# operation (SHEPHERD_FUZZ_EXAMPLES, default 25) and seconds per role (SHEPHERD_FUZZ_SECS,
# default 30). Uses the running emulator, or starts one (and then stops it).
#   bash infra/fuzz.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
ensure_tool_venv schemathesis
ST="$ROOT/.venv-schemathesis/bin/schemathesis"
EXAMPLES="${SHEPHERD_FUZZ_EXAMPLES:-25}"
SECS="${SHEPHERD_FUZZ_SECS:-30}"
STACK=shepherd-fuzz
API=127.0.0.1:8797
PIDFILE="$LOCAL/fuzz-runtime.pid"
OUT="$LOCAL/fuzz"

started_emulator=0
if ! { [ -f "$LOCAL/moto$EMULATOR_TAG.pid" ] && kill -0 "$(cat "$LOCAL/moto$EMULATOR_TAG.pid")" 2>/dev/null; }; then
  emulator_up
  started_emulator=1
fi
emulator_up >/dev/null 2>&1 # exports the admin's keys and the endpoint
cleanup() {
  stop_pid "$PIDFILE"
  [ "$started_emulator" = 1 ] && emulator_down
  return 0
}
trap cleanup EXIT

say "starting the local stack $STACK for the fuzzer (API on $API)"
cargo build --quiet -p shepherd-local
rm -rf "$OUT" && mkdir -p "$OUT"
# Throttling is raised: the fuzzer tests the routes, not the stage's rate limit (the
# integration tests test that, and 429 is documented on every route).
"$ROOT/target/debug/shepherd-local" --stack "$STACK" --endpoint "$AWS_ENDPOINT_URL" \
  --param ApiThrottleRate=10000 --param ApiThrottleBurst=10000 \
  up --api "$API" --provider 127.0.0.1:4110 --mcp 127.0.0.1:4120 --scm 127.0.0.1:4130 \
  --agent 127.0.0.1:4140 --api-tokens "$OUT/tokens.json" > "$OUT/runtime.log" 2>&1 &
echo $! > "$PIDFILE"
for _ in $(seq 1 300); do
  grep -q "local stack .* up" "$OUT/runtime.log" && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -20 "$OUT/runtime.log" >&2; exit 1; }
  sleep 0.2
done

failed=0
for role in viewer operator admin stack-operator none; do
  header=()
  [ "$role" = none ] || header=(-H "Authorization: Bearer local-$role")
  say "schemathesis as $role (at most $EXAMPLES examples per operation, ${SECS}s)"
  set +e
  "$ST" run "http://$API/openapi.json" "${header[@]}" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --max-time "$SECS" --seed 20261207 --no-shrink \
    --continue-on-failure --warnings off --workers 1 \
    --report ndjson --report-ndjson-path "$OUT/$role.ndjson" > "$OUT/$role.log" 2>&1
  code=$?
  set -e
  sed -n '/^=* SUMMARY/,$p' "$OUT/$role.log" | grep -E "Tested|generated|Failures|❌|failures? |passed" || true
  if [ "$code" != 0 ]; then
    failed=1
    echo "schemathesis as $role failed (exit $code); the failures:" >&2
    sed -n '/^=* \(FAILURES\|ERRORS\)/,/^=* \(WARNINGS\|SUMMARY\)/p' "$OUT/$role.log" | head -150 >&2
  fi
done
[ "$failed" = 0 ] || { echo "the API broke its contract (logs: ${OUT#"$ROOT"/}/)" >&2; exit 1; }
say "the API kept its contract for every role"
