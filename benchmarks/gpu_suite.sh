#!/usr/bin/env bash
# GPU checks and timings in one call on a lent H100/H200 (see README "GPU numbers"). Expects, carried in
# the checkout: .gpu/ (shared/gpu: mamba-ssm sdist + build_kernels.sh), .whl/ (pytest wheels), and
# .device/fixtures (shared/fixtures/original). Writes JSON under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 LOCALMAMBA_FIXTURES=$PWD/.device/fixtures
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pytest-*.whl .whl/pluggy-*.whl \
    .whl/iniconfig-*.whl .whl/pygments-*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
time bash .gpu/build_kernels.sh || echo "!! mamba-ssm kernel build failed: timings below use the torch backend"
python3 -m pytest -q -p no:cacheprovider tests/ops tests/layers tests/models/test_original_checkpoints.py -k "cuda or original or gpu" 2>&1 | tail -8
python3 benchmarks/bench_selective_scan.py --device cuda --json "${OUT:-/tmp}/ops_cuda.json" 2>&1 | tail -20
# "auto" on CUDA is the Triton path (ops/_dispatch.py): mamba-ssm's rows here, Triton's below, re-check that rule
python3 benchmarks/bench_models.py --device cuda --backend cuda --json "${OUT:-/tmp}/models_cuda.json" "$@" 2>&1 | tail -20
python3 benchmarks/profile_models.py --device cuda --model local_vim_tiny --mode train 2>&1 | tail -32
python3 benchmarks/bench_models.py --device cuda --backend triton --formulations stacked --json "${OUT:-/tmp}/models_triton.json" 2>&1 | tail -8
# the CIFAR variants at their training batch (sets the epochs that fit a 10-minute call)
python3 benchmarks/bench_models.py --device cuda --models local_vim_tiny_cifar vim_tiny_cifar --img-size 32 \
    --batch-size 512 --formulations stacked --json "${OUT:-/tmp}/models_cifar_cuda.json" 2>&1 | tail -8
