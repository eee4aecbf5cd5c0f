"""localmamba.notebook.selective_scan (notebook 02): discretisation, impulse responses, backend checks."""
import math

import numpy as np
import pytest
import torch

from localmamba.notebook import selective_scan

pd = pytest.importorskip("pandas")


# ------------------------------------------------------------------------------ scan / op plots

def test_plot_zoh():
    ax = selective_scan.plot_zoh(A=-2.0, B=1.0, deltas=np.linspace(0, 2, 11))
    assert len(ax.lines) == 3 and len(ax.get_legend().get_texts()) == 3
    A_bar, B_zoh, B_mamba = selective_scan.zoh_discretize(-2.0, 1.0, np.linspace(0, 2, 11))
    assert np.allclose(ax.lines[0].get_ydata(), A_bar) and np.allclose(ax.lines[2].get_ydata(), B_mamba)
    assert "A = -2" in ax.get_title()


def test_plot_impulse_responses():
    y = {"A=-0.5": np.exp(-0.5 * np.arange(10)), "A=-2": np.exp(-2 * np.arange(10))}
    ax = selective_scan.plot_impulse_responses(y, impulse_at=0, events={"delta spike": 5}, title="decay")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A=-0.5", "A=-2", "input impulse", "delta spike"]
    assert ax.get_title() == "decay" and ax.get_xlabel() == "step t"
    ax = selective_scan.plot_impulse_responses(y, styles={"A=-2": {"lw": 5, "color": "0.5"}}, logy=True)
    assert ax.lines[1].get_linewidth() == 5 and ax.get_yscale() == "log"


def test_plot_backend_timings():
    df = pd.DataFrame({"backend": ["ref", "ref", "torch", "torch"], "device": ["cpu"] * 4,
                       "length": [16, 32, 16, 32], "ms": [2.0, 4.0, 0.5, 0.6]})
    ax = selective_scan.plot_backend_timings(df)
    assert [ln.get_label() for ln in ax.lines] == ["ref (cpu)", "torch (cpu)"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


# -------------------------------------------------------------------------------- discretisation

def test_zoh_discretize():
    A_bar, B_zoh, B_mamba = selective_scan.zoh_discretize(-2.0, 3.0, np.array([0.0, 0.01, 1.0]))
    assert A_bar == pytest.approx(np.exp([0.0, -0.02, -2.0]))
    assert B_zoh == pytest.approx([0.0, (np.exp(-0.02) - 1) / -2 * 3, (np.exp(-2.0) - 1) / -2 * 3])
    assert B_mamba == pytest.approx([0.0, 0.03, 3.0])
    # small steps: exact ZOH and Mamba's delta*B agree to first order
    assert B_zoh[1] == pytest.approx(B_mamba[1], rel=0.02)
    # A = 0 has the limit B_bar = delta * B
    _, B0, _ = selective_scan.zoh_discretize(0.0, 2.0, 0.5)
    assert B0 == pytest.approx(1.0)


def test_impulse_response_is_exponential_decay():
    y = selective_scan.impulse_response(A=-0.5, delta=0.2, length=20, impulse_at=3)
    assert (y[:3] == 0).all()
    # y_t = delta * exp(delta A)^(t - t0) for t >= t0 (B = C = 1, D = 0)
    t = np.arange(3, 20)
    assert y[3:] == pytest.approx(0.2 * np.exp(0.2 * -0.5 * (t - 3)), rel=1e-9)


def test_impulse_response_selective_reset():
    delta = np.full(30, 0.1)
    delta[15] = 20.0  # a spike: exp(20 * A) ~ 0 wipes the state at step 15
    y = selective_scan.impulse_response(A=-1.0, delta=delta, length=30, impulse_at=2)
    assert y[14] == pytest.approx(0.1 * np.exp(-0.1 * 12))
    assert abs(y[15]) < 1e-8 and np.abs(y[16:]).max() < 1e-8
    y_skip = selective_scan.impulse_response(A=-1.0, delta=0.1, length=10, impulse_at=2, D=1.0)
    assert y_skip[2] == pytest.approx(1.0 + 0.1)  # the skip D * u adds to the state's read-out
    with pytest.raises(ValueError):
        selective_scan.impulse_response(A=-1.0, delta=0.1, length=10, impulse_at=10)
    with pytest.raises(ValueError, match="delta must be"):
        selective_scan.impulse_response(A=-1.0, delta=np.ones(5), length=10)


def test_impulse_response_selective_B_and_C():
    # B_t = 0 at the first impulse: that input is not written; the second one is
    B = np.ones(20)
    B[2] = 0.0
    y = selective_scan.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=[2, 10], B=B)
    assert np.abs(y[:10]).max() == 0 and y[10] == pytest.approx(0.5)
    # C_t = 0 hides the state from the output, but the state is still there afterwards
    C = np.ones(20)
    C[5:10] = 0.0
    y_plain = selective_scan.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=2)
    y_hidden = selective_scan.impulse_response(A=-0.5, delta=0.5, length=20, impulse_at=2, C=C)
    assert (y_hidden[5:10] == 0).all()
    assert y_hidden[10:] == pytest.approx(y_plain[10:])
    # numpy reference with the same scalars, several states of the recurrence unrolled by hand
    u = np.random.default_rng(0).standard_normal(12)
    y = selective_scan.impulse_response(A=-0.3, delta=0.7, u=u, B=2.0, C=0.5, D=0.25)
    h, expected = 0.0, []
    for x in u:
        h = np.exp(0.7 * -0.3) * h + 0.7 * 2.0 * x
        expected.append(0.5 * h + 0.25 * x)
    assert y == pytest.approx(np.array(expected))


def test_compare_backends_agree_with_reference():
    from localmamba.ops import available_backends

    df = selective_scan.compare_backends(b=1, d=2, n=4, l=16)
    assert list(df.index) == list(available_backends())
    assert {"out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"} <= set(df.columns)
    assert (df.to_numpy() < 1e-3).all()
    df64 = selective_scan.compare_backends(["ref"], b=1, d=2, n=4, l=8, dtype=torch.float64)
    assert (df64.to_numpy() < 1e-12).all()
    grouped = selective_scan.compare_backends(["torch"], b=1, d=4, n=4, l=16, groups=2)
    assert (grouped.to_numpy() < 1e-3).all() and not grouped.equals(df.loc[["torch"]])
    with pytest.raises(ValueError, match="multiple of groups"):
        selective_scan.compare_backends(["torch"], d=3, groups=2)


def test_time_backends_table():
    df = selective_scan.time_backends(["ref"], lengths=(8, 16), b=1, d=2, n=2, repeat=2, warmup=0, progress=False)
    assert list(df.columns) == ["backend", "device", "length", "ms", "ms_min", "tokens_per_s", "threads"]
    assert list(df["length"]) == [8, 16] and (df["ms"] > 0).all() and (df["ms_min"] <= df["ms"]).all()
    threads = torch.get_num_threads()
    dfb = selective_scan.time_backends(["ref"], lengths=(8,), b=1, d=2, n=2, repeat=1, warmup=0,
                                       backward=True, threads=1, progress=False)
    assert len(dfb) == 1 and math.isfinite(dfb["ms"].iloc[0])
    assert dfb["threads"].iloc[0] == 1 and torch.get_num_threads() == threads  # restored


def test_backends_are_timed_only_where_they_run():
    # the GPU kernels take CUDA tensors only, the C kernel CPU tensors only, the others both
    assert [selective_scan._runs_on(b, "cpu") for b in ("ref", "torch", "cpu", "cuda", "triton")] == [
        True, True, True, False, False]
    assert [selective_scan._runs_on(b, "cuda:0") for b in ("ref", "torch", "cpu", "cuda", "triton")] == [
        True, True, False, True, True]
