"""Running a Triton check script: compiled on a GPU, else in Triton's CPU interpreter (a subprocess, since
TRITON_INTERPRET is read when triton is imported)."""
import os
import subprocess
import sys

import pytest
import torch

from localmamba.ops import _cpu_kernels, _dispatch


def _in_interpreter(check: str) -> None:
    pytest.importorskip("triton")
    if torch.cuda.is_available():  # the GPU test runs the compiled kernels instead
        pytest.skip("a CUDA GPU is present: the kernels are checked on it")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", check.format(device="cpu")], env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode and "interpret" in r.stderr.lower() and "not supported" in r.stderr.lower():
        pytest.skip("this triton has no CPU interpreter")
    assert r.returncode == 0, r.stdout + r.stderr


def _on_gpu(check: str) -> None:
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    exec(check.format(device="cuda"), {})


@pytest.fixture
def triton_interpreted():
    """run(check): the script (with a {device} field) in the interpreter on CPU; skips where a GPU exists."""
    return _in_interpreter


@pytest.fixture
def triton_on_gpu():
    """run(check): the script on the GPU, compiled; skips without one."""
    return _on_gpu


@pytest.fixture
def no_compiler(monkeypatch):
    """The CPU kernels as on a machine without a C compiler (nothing built or cached yet)."""
    def missing():
        raise RuntimeError(f"no C compiler found ($CC unset, no cc or gcc on PATH): "
                           f"{_cpu_kernels.CPU_KERNEL_INSTALL_HINT}")
    monkeypatch.setattr(_cpu_kernels, "_lib", None)
    monkeypatch.setattr(_cpu_kernels, "_lib_error", None)
    monkeypatch.setattr(_cpu_kernels, "_compiler", missing)
    monkeypatch.setattr(_dispatch, "_warned", set())
