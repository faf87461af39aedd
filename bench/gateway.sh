#!/usr/bin/env bash
# The gateway benchmark: Enclave and LiteLLM's proxy in front of the same mock upstream, loaded
# by `oha` on loopback, in one run. Installs what it needs where missing: `oha` (cargo install,
# into target/tools) and LiteLLM's proxy (pip, into target/litellm-venv); the embedded models
# (`enclave models pull`, into target/test-models). Extra arguments go to `gateway-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/tools/bin/oha ] || cargo install --locked --root target/tools oha
if [ ! -x target/litellm-venv/bin/litellm ]; then
  python3 -m venv target/litellm-venv
  target/litellm-venv/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
cargo build --release --locked -p enclave -p enclave-mock-upstream -p enclave-bench
target/release/enclave models pull --models-dir target/test-models
exec target/release/gateway-bench "$@"
