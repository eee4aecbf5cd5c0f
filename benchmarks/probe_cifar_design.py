"""Design probe behind the CIFAR variants (GPU): training images/s of candidate sizes, the scan alone, a profile.

    python benchmarks/probe_cifar_design.py          # about 3 minutes on an H200, mamba-ssm installed

Candidates keep the patchify stem (``stem="patch"``, as when this was run); names read L/V (LocalVim
directions / Vim-style h, h_flip), p (patch size), d (width), the depth and n (d_state). The scan is
timed alone at the shapes of one layer (batch, K*d_inner, length, d_state, K): cuda = mamba-ssm,
triton = ours. The profile is one training step of local_vim_tiny_cifar, by CUDA time.
mamba-ssm: ``pip install -e ".[cuda]" --no-build-isolation``, or without a network the sources in
``../shared/gpu`` (benchmarks/gpu_suite.sh's header says how). Its figures chose the CIFAR variants' size;
the variants' results are in benchmarks/RESULTS.md, section "CIFAR-10 accuracy".
"""

import timm
import torch
from bench_models import make_train_step, scan_ms, train_img_s

import localmamba  # noqa: F401
from localmamba.models.flops import count_params

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def train_speed(model, kw, batch=512, seconds=6.0, backend="auto", compile=False):
    """Images/s of bf16 training steps over ``seconds``, and the parameter count."""
    m = timm.create_model(model, backend=backend, stem="patch", **kw).cuda().train()
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    return train_img_s(m, x, y, seconds, compile=compile)[0], count_params(m)


L, V = "local_vim_tiny_cifar", "vim_tiny_cifar"  # their registered directions (V: h, h_flip in every layer)
cfgs = {
    "L_p4_d192_12": (L, {}),
    "V_p4_d192_12": (V, {}),
    "L_p2_d192_12": (L, dict(patch_size=2, pt_hw_seq_len=16)),
    "V_p2_d192_12": (V, dict(patch_size=2, pt_hw_seq_len=16)),
    "L_p2_d128_12": (L, dict(patch_size=2, pt_hw_seq_len=16, embed_dim=128)),
    "V_p2_d128_12": (V, dict(patch_size=2, pt_hw_seq_len=16, embed_dim=128)),
    "L_p4_d192_12_n8": (L, dict(d_state=8)),
}
runs = [(name, "auto", False) for name in cfgs]
runs += [("L_p4_d192_12", "triton", False), ("V_p4_d192_12", "triton", False), ("L_p4_d192_12", "auto", True)]
for name, backend, compile in runs:
    try:
        s, p = train_speed(*cfgs[name], backend=backend, compile=compile, seconds=8 if compile else 6)
        print(f"{name:18s} {backend}{' compiled' if compile else ''} train bf16 b512: {s:7.0f} img/s  "
              f"params {p / 1e6:.2f}M", flush=True)
    except Exception as e:
        print(name, backend, "FAILED", repr(e)[:300], flush=True)


for shp in [(512, 1536, 64, 16, 4), (512, 1024, 256, 16, 4), (128, 1536, 196, 16, 4)]:
    for be in ["cuda", "triton"]:
        try:
            print(f"scan {shp} {be}: fwd {scan_ms(*shp, be, False):.2f} ms  fwd+bwd {scan_ms(*shp, be, True):.2f} ms", flush=True)
        except Exception as e:
            print("scan", shp, be, "FAILED", repr(e)[:200], flush=True)

from torch.profiler import profile, ProfilerActivity  # noqa: E402

m = timm.create_model("local_vim_tiny_cifar", stem="patch").cuda().train()
step, _ = make_train_step(m, torch.randn(512, 3, 32, 32, device="cuda"), torch.randint(0, 10, (512,), device="cuda"))
for _ in range(3):
    step()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))
