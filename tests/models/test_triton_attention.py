"""The Triton attention kernel (mpm.models.triton_attention) against its plain twin, in Triton's interpreter.

The interpreter runs the kernel's logic on the CPU (NumPy); ``test_triton_compile`` compiles it for
sm_90 and ``benchmarks/cuda_checks.py`` compares it with FlashAttention-2 on a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mpm.errors import BackendError

_CHECK = textwrap.dedent('''
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import importlib
    import torch
    from mpm.models import triton_attention as ta
    A = importlib.import_module("mpm.models.attention")  # the module (mpm.models exports a function of that name)
    torch.manual_seed(0)
    H, D = 2, 16
    scale = D ** -0.5
    tilings = [ta.FlashTiles(16, 16, 4, 2), ta.FlashTiles(16, 64, 4, 2), ta.tiles_for(D)]
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        # packed sequences: an empty one, one shorter than a tile, one over several query and key tiles,
        # and a pad sequence of rows after the last image; q, k, v strided views of one qkv buffer
        cu = torch.tensor([0, 0, 7, 90, 100], dtype=torch.int32)
        qkv = torch.randn(104, 3, H, D).to(dtype)
        q, k, v = qkv.unbind(1)
        ref = ta.varlen_reference(q, k, v, cu, scale)
        for tiles in tilings:
            out = ta.flash_varlen(q, k, v, cu, 83, scale, tiles)
            err = (out[:100].float() - ref[:100].float()).abs().max().item()
            assert err < tol, f"varlen {dtype} {tiles}: {err}"
        # padded sequences with and without key lengths: every row's result and zeros past a length
        b, n = 3, 40
        qkv = torch.randn(b * n, 3, H, D).to(dtype)
        q, k, v = qkv.unbind(1)
        lengths = torch.tensor([40, 1, 23], dtype=torch.int32)
        for lens in (None, lengths):
            for tiles in tilings:
                out = ta.flash_padded(q, k, v, n, lens, scale, tiles)
                for s in range(b):
                    m = n if lens is None else int(lens[s])
                    rows = slice(s * n, s * n + m)
                    want = ta.varlen_reference(q[rows], k[rows], v[rows], torch.tensor([0, m]), scale)
                    err = (out[rows].float() - want.float()).abs().max().item()
                    assert err < tol, f"padded {dtype} {tiles} seq {s}: {err}"
                    assert not out[s * n + m:(s + 1) * n].any(), "rows past a length are zero"
        # the attention backend's layout glue: (B, H, N, D) views of one projection against the math backend
        qkv = torch.randn(b, n, 3, H, D).to(dtype).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        for lens in (None, lengths.long()):
            got = A._triton(q, k, v, lens, scale)
            want = A._math(q.float(), k.float(), v.float(), lens, None, scale)
            for s in range(b):
                m = n if lens is None else int(lens[s])
                err = (got[s, :, :m].float() - want[s, :, :m]).abs().max().item()
                assert err < tol, f"attention glue {dtype} seq {s}: {err}"
    print("triton attention ok")
''')


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_kernel_matches_its_twin_in_the_interpreter() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "triton attention ok" in proc.stdout


def test_twin_is_attention_per_sequence() -> None:
    """The twin itself: each sequence attends only within itself (against the math backend, float64)."""
    from mpm.models import triton_attention as ta
    from mpm.models.attention import attention

    torch.manual_seed(1)
    q, k, v = torch.randn(3, 30, 2, 8, dtype=torch.float64).unbind(0)
    cu = torch.tensor([0, 12, 30], dtype=torch.int32)
    out = ta.varlen_reference(q, k, v, cu, 8 ** -0.5)
    for s, e in ((0, 12), (12, 30)):
        want = attention(*(t[s:e].transpose(0, 1)[None] for t in (q, k, v)), backend="math")[0].transpose(0, 1)
        torch.testing.assert_close(out[s:e], want)


def test_unsupported_head_width_is_a_clear_error() -> None:
    from mpm.models import triton_attention as ta

    q = torch.zeros(4, 2, 24)
    with pytest.raises(BackendError, match="head widths 16, 32, 64, 128 .* got width 24"):
        ta.check_inputs(q, q, q)
