# Shared by the infra scripts. Source it; it sets ROOT, VENV, LOCAL and the emulator env.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCAL="$ROOT/.local"
mkdir -p "$LOCAL"
EMULATOR_PORT="${SHEPHERD_EMULATOR_PORT:-5005}"
# An emulator on another port keeps its own files, so two can run side by side.
EMULATOR_TAG=""
[ "$EMULATOR_PORT" = 5005 ] || EMULATOR_TAG=".$EMULATOR_PORT"
ADMIN_ENV="$LOCAL/admin$EMULATOR_TAG.env"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export SAM_CLI_TELEMETRY=0
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The project's virtualenv with the pinned tools; reinstalled when requirements change.
ensure_venv() {
  tool_venv "$VENV" "$ROOT/infra/requirements.txt" "the local toolchain (moto, cargo-lambda, SAM CLI, cfn-lint)"
  export PATH="$VENV/bin:$PATH"
}

# A scanner with pins of its own (checkov's clash with SAM CLI's) in its own virtualenv.
# Prints nothing; call its tools by path ("$ROOT/.venv-<name>/bin/<tool>").
ensure_tool_venv() {
  tool_venv "$ROOT/.venv-$1" "$ROOT/infra/requirements-$1.txt" "$1"
}

tool_venv() {
  local venv="$1" reqs="$2" what="$3"
  local stamp="$venv/.requirements.$(sha256sum "$reqs" | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    say "installing $what into ${venv#"$ROOT"/}"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$reqs"
    rm -f "$venv"/.requirements.* && touch "$stamp"
  fi
}

# Starts the emulator (unless it runs) with IAM enforced as in AWS: a fresh emulator gets
# an admin user for the operators' tools (its keys in .local/admin.env, or admin.<port>.env off the default port; exported here), then
# every request must be signed by a known identity and allowed by its policies. Each
# function runs with its own role from the template (see infra/local/src/provision.rs).
emulator_up() {
  local pidfile="$LOCAL/moto$EMULATOR_TAG.pid" endpoint="http://127.0.0.1:$EMULATOR_PORT"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ -f "$ADMIN_ENV" ]; then
    say "emulator already running on 127.0.0.1:$EMULATOR_PORT"
  else
    stop_pid "$pidfile"
    if (exec 3<>"/dev/tcp/127.0.0.1/$EMULATOR_PORT") 2>/dev/null; then
      echo "port $EMULATOR_PORT is taken by another process; set SHEPHERD_EMULATOR_PORT" >&2
      return 1
    fi
    say "starting moto on 127.0.0.1:$EMULATOR_PORT (IAM enforced)"
    MOTO_IAM_LOAD_MANAGED_POLICIES=true \
      "$VENV/bin/python" "$ROOT/infra/emulator.py" -H 127.0.0.1 -p "$EMULATOR_PORT" > "$LOCAL/moto$EMULATOR_TAG.log" 2>&1 &
    echo $! > "$pidfile"
    local up=0
    for _ in $(seq 1 150); do
      if curl -sf -o /dev/null -X POST "$endpoint/moto-api/reset"; then up=1; break; fi
      sleep 0.1
    done
    if [ "$up" != 1 ]; then
      echo "the emulator did not start; see $LOCAL/moto$EMULATOR_TAG.log" >&2
      return 1
    fi
    "$VENV/bin/python" "$ROOT/infra/bootstrap.py" "$endpoint" > "$ADMIN_ENV"
    curl -sf -o /dev/null -X POST -H 'content-type: text/plain' --data-binary 0 \
      "$endpoint/moto-api/reset-auth"
    "$VENV/bin/python" "$ROOT/infra/bootstrap.py" "$endpoint" --check
  fi
  # shellcheck disable=SC1091
  source "$ADMIN_ENV"
  export AWS_ENDPOINT_URL="$endpoint"
}

stop_pid() {
  local pidfile="$1"
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

emulator_down() {
  stop_pid "$LOCAL/moto$EMULATOR_TAG.pid"
  rm -f "$ADMIN_ENV"
}
