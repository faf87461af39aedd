#!/usr/bin/env bash
# Makes bench/.venv with the benchmark's peers: llama-cpp-python (compiles llama.cpp with
# -march=native, about 9 minutes on 2 cores) and onnxruntime with onnx, safetensors, tokenizers.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import llama_cpp, onnxruntime, onnx, safetensors, tokenizers, numpy" 2>/dev/null && exit 0
CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install --quiet --disable-pip-version-check \
  llama-cpp-python onnxruntime onnx safetensors tokenizers numpy
