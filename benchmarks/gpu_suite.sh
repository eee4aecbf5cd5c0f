#!/usr/bin/env bash
# GPU tests and timings in one call, run from the project's root on a machine with one CUDA GPU:
#
#   bash benchmarks/gpu_suite.sh            # JSON results under $OUT (default build/gpu_suite)
#
# It produces the GPU tables of benchmarks/RESULTS.md ("Selective scan, the op alone" and "Model
# throughput on the GPU", including "Triton against mamba-ssm", the check of `auto`'s CUDA rule).
#
# Needs: this checkout and PyTorch with CUDA and Triton, timm and the package's dependencies (on a
# machine with a network: `pip install -e ".[dev]"`). A GPU machine without a network gets the rest
# from ignored folders of the checkout, copied there beforehand (each step is skipped without its folder):
#   .gpu/             mamba-ssm's source and build script, for the `cuda` (mamba-ssm) rows:
#                     mkdir -p .gpu && cp ../shared/gpu/* .gpu/            (builds in about 2 minutes, sm_90)
#   .whl/             wheels of pytest and its dependencies, for the GPU tests where pytest is missing:
#                     pip download --only-binary=:all: --no-deps -d .whl pytest pluggy iniconfig pygments packaging
#   .device/fixtures  the checkpoints written by the original code, for their tests:
#                     mkdir -p .device && cp -r ../shared/fixtures/original .device/fixtures
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-build/gpu_suite}
mkdir -p "$OUT"
[[ -d .device/fixtures ]] && export LOCALMAMBA_FIXTURES=$PWD/.device/fixtures
if ! python3 -c "import pytest" 2>/dev/null && compgen -G ".whl/pytest-*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
backends=(triton)
if python3 -c "import mamba_ssm" 2>/dev/null; then
  backends+=(cuda)
elif [[ -f .gpu/build_kernels.sh ]]; then
  time bash .gpu/build_kernels.sh && backends+=(cuda) || echo "!! mamba-ssm build failed: no cuda rows"
fi

# GPU tests: every test that needs CUDA (the others run in CI on a CPU)
python3 -m pytest -q -p no:cacheprovider tests -k "(cuda or gpu or triton or graph or original) and not notebook" 2>&1 | tail -8
# the op alone: every backend at one LocalVim-T layer's scan, then the Triton kernels at the models' shapes
python3 benchmarks/bench_selective_scan.py --device cuda --json "$OUT/ops_cuda.json" 2>&1 | tail -20
python3 benchmarks/bench_triton_scan.py 2>&1 | tail -20
# the models: Triton against mamba-ssm (auto's rule), then Triton's formulations against the original's loop
for b in "${backends[@]}"; do
  python3 benchmarks/bench_models.py --device cuda --backend "$b" --formulations stacked --steps 10 \
      --json "$OUT/models_$b.json" 2>&1 | tail -8
done
python3 benchmarks/bench_models.py --device cuda --backend triton --formulations stacked graph loop --steps 10 \
    --json "$OUT/models_triton_all.json" 2>&1 | tail -14
# where a LocalVim-T training step's time goes, and whether the host CPU can issue it fast enough
python3 benchmarks/profile_models.py --device cuda --model local_vim_tiny --mode train 2>&1 | tail -32
