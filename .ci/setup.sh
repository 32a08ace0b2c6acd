#!/usr/bin/env bash
# Set up a virtual environment with everything dynopt needs, on a fresh machine.
# Idempotent: re-running only reinstalls when setup.cfg changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.dynopt-installed
want=$(sha1sum setup.cfg setup.py | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # The CPU build of torch 2.13.0 (an unpinned torch may pull a multi-GB CUDA build).
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  # integrations: transformers, accelerate, pytorch-lightning, arviz (tests importorskip them)
  .venv/bin/python -m pip install --quiet -e ".[test,dev,integrations]"
  # devinterp (tests/test_devinterp.py): devinterp.optim needs only torch, so none of its
  # dependencies (datasets, zarr, xarray, ...) are installed
  .venv/bin/python -m pip install --quiet --no-deps "devinterp==2.0.0"
  echo "$want" > "$stamp"
fi
# Compile the numba kernels into the user's cache now (about 55 s on 2 cores; 2 s when the
# cache for these kernel sources exists), so the first `dynopt study`, the first optimizer step
# and the test workers load them instead of each compiling them. An empty cache still works:
# each kernel then compiles on first use.
.venv/bin/dynopt compile
