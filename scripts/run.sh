#!/usr/bin/env bash
# The main job on a fresh machine: install build needs, build Enclave (release), fetch and verify
# the embedded models, and serve on 127.0.0.1:8080 (ENCLAVE_LISTEN or --listen to change it).
# On first start it creates the tenant `default` and prints an admin API key once.
# Extra arguments go to `enclave serve`, e.g. scripts/run.sh --listen 0.0.0.0:9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p enclave
export ENCLAVE_PYTHON="${ENCLAVE_PYTHON:-$PWD/.venv/bin/python}"
exec target/release/enclave serve "$@"
