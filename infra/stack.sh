#!/usr/bin/env bash
# The local stack: `up` starts the emulator, provisions template.yaml into it and runs every
# function (plus the fake provider on 127.0.0.1:4010) in the background; `down` stops it all.
#   bash infra/stack.sh up | down | status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STACK="${SHEPHERD_STACK:-shepherd-local}"
RUNTIME_PID="$LOCAL/runtime.pid"

up() {
  ensure_venv
  emulator_up
  say "building shepherd-local and the shepherd CLI"
  (cd "$ROOT" && cargo build --quiet -p shepherd-local -p shepherd-cli)
  stop_pid "$RUNTIME_PID"
  : > "$LOCAL/runtime.log"
  (cd "$ROOT" && exec "$ROOT/target/debug/shepherd-local" --stack "$STACK" --endpoint "$AWS_ENDPOINT_URL" up \
      >> "$LOCAL/runtime.log" 2>&1) &
  echo $! > "$RUNTIME_PID"
  for _ in $(seq 1 150); do
    if grep -q "local stack .* up" "$LOCAL/runtime.log"; then
      say "local stack $STACK is up (logs: .local/runtime.log, .local/moto.log)"
      say "operate it as the local admin (IAM is enforced):"
      echo "source ${ADMIN_ENV#"$ROOT"/}; export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=us-east-1 SHEPHERD_STACK=$STACK"
      say "HTTP API on http://127.0.0.1:8787 (tokens in .local/api-tokens.json, e.g. Authorization: Bearer local-operator)"
      return 0
    fi
    if ! kill -0 "$(cat "$RUNTIME_PID")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "the local runtime did not start:" >&2
  tail -20 "$LOCAL/runtime.log" >&2
  down
  return 1
}

down() {
  stop_pid "$RUNTIME_PID"
  emulator_down
  say "local stack stopped"
}

status() {
  for f in moto runtime; do
    if [ -f "$LOCAL/$f.pid" ] && kill -0 "$(cat "$LOCAL/$f.pid")" 2>/dev/null; then
      echo "$f: running (pid $(cat "$LOCAL/$f.pid"))"
    else
      echo "$f: stopped"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash infra/stack.sh up|down|status" >&2; exit 2 ;;
esac
