#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs the toolchain, runs formatting, lints,
# the generated files' check (template region, sample events, docs/openapi.json) and
# checkov, the fast tier (`cargo test-fast`: no emulator), then starts the emulator for the
# emulator tier (`cargo test-emulator`: integration and CLI tests) and the API fuzzer
# (infra/fuzz.sh), checks the template (sam validate, cfn-lint on the SAM-translated
# template) and builds it (sam build, release arm64), then stops the emulator.
# SHEPHERD_SKIP_SAM_BUILD=1 skips the (slow) sam build.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
rustup component add rustfmt clippy >/dev/null 2>&1 || true

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "generated files are current: template region, sample events, docs/openapi.json (shepherd-local template --check)"
cargo run --quiet -p shepherd-local -- template --check

say "checkov on template.yaml (every finding fixed or skipped inline with its reason)"
ensure_tool_venv checkov
# --skip-download: no call to Prisma Cloud (CI has no network); the built-in checks only.
"$ROOT/.venv-checkov/bin/checkov" -f template.yaml --framework cloudformation --quiet --compact \
  --skip-download -o json > "$LOCAL/checkov.json" 2> "$LOCAL/checkov.log" || true
python3 infra/checkov_gate.py "$LOCAL/checkov.json"

say "cargo test-fast (domain, engine on the memory adapter, pipelines, template generation)"
cargo test-fast

say "the emulator tier without an emulator stops with one line"
set +e
out="$(env -u SHEPHERD_TEST_ENDPOINT cargo test --quiet -p shepherd-it --test it 2>&1)"
code=$?
set -e
lines="$(grep -c 'the emulator tier needs the local AWS emulator' <<<"$out" || true)"
if [ "$code" = 0 ] || [ "$lines" != 1 ] || grep -q 'panicked' <<<"$out"; then
  printf '%s\n' "$out" | tail -20 >&2
  echo "expected one line naming the missing emulator (exit $code, $lines such lines)" >&2
  exit 1
fi

trap emulator_down EXIT
emulator_up
say "cargo test-emulator (integration and CLI tests against moto at $AWS_ENDPOINT_URL)"
SHEPHERD_TEST_ENDPOINT="$AWS_ENDPOINT_URL" cargo test-emulator -- --test-threads "${SHEPHERD_TEST_THREADS:-4}"
say "the HTTP API's contract fuzzed (schemathesis against the local stack, every role)"
bash infra/fuzz.sh
emulator_down

say "sam validate"
sam validate --template template.yaml --region us-east-1
say "cfn-lint on the SAM-translated template"
python infra/translate.py template.yaml "$LOCAL/translated.json"
cfn-lint --ignore-checks W3037 -- "$LOCAL/translated.json"

if [ "${SHEPHERD_SKIP_SAM_BUILD:-0}" != 1 ]; then
  say "sam build (release, arm64, every function)"
  for try in 1 2 3; do
    rustup target add aarch64-unknown-linux-gnu >/dev/null && break
    [ "$try" = 3 ] && { echo "cannot install the aarch64-unknown-linux-gnu target (rustup)" >&2; exit 1; }
    sleep 5
  done
  # Keep cargo's output outside the tree SAM reads.
  CARGO_TARGET_DIR="${SHEPHERD_LAMBDA_TARGET_DIR:-$ROOT/../.shepherd-lambda-target}" \
    sam build --template template.yaml --build-dir "$LOCAL/sam-build"
  ls -l "$LOCAL"/sam-build/*/bootstrap
fi
say "all checks passed"
