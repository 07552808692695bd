"""Split-KV around the varlen attention kernel (mpm.models.kv_split): the chunked layout and the
log-sum-exp combine give the unsplit attention. FlashAttention-2 itself needs a GPU
(benchmarks/cuda_checks.py runs it); here a reference varlen attention with the same contract
(normalised output and log-sum-exp per query row, +inf for a query with no key) stands for it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mpm.models.kv_split import combine_kv_splits, kv_split


def reference_varlen(q, k, v, cu_q, cu_k, scale):
    """(T_q, H, D) outputs and (H, T_q) log-sum-exp of each query sequence over its key sequence."""
    out = torch.zeros_like(q)
    lse = torch.full((q.shape[1], q.shape[0]), float("inf"), dtype=q.dtype)
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        if q1 == q0 or k1 == k0:  # FlashAttention-2 writes 0 and +inf for a query with no key
            continue
        logits = torch.einsum("qhd,khd->hqk", q[q0:q1], k[k0:k1]) * scale
        lse[:, q0:q1] = torch.logsumexp(logits, dim=-1)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", logits.softmax(-1), v[k0:k1])
    return out, lse


def _packed(lengths: list[int], h: int = 3, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    qkv = torch.randn(rows, 3, h, d, generator=g, dtype=torch.float64)
    q, k, v = qkv.unbind(1)  # strided views, as the encoder passes them
    return q, k, v, cu, rows


@pytest.mark.parametrize("splits", [2, 3, 5])
def test_split_keys_give_the_unsplit_attention(splits: int) -> None:
    """Images of various lengths and a short pad sequence (fewer rows than chunks: empty chunks)."""
    lengths = [37, 1, 20, 64, 2]
    q, k, v, cu, rows = _packed(lengths)
    scale = 0.25
    want, _ = reference_varlen(q, k, v, cu, cu, scale)
    sp = kv_split(cu, rows, max(lengths), splits)
    assert sp.q_rows.shape == (splits * rows,) and sp.parts.shape == (rows, splits)
    assert torch.equal(sp.q_rows[sp.parts], torch.arange(rows)[:, None].expand(rows, splits))
    assert sp.max_k == -(-max(lengths) // splits) and int((sp.cu_k[1:] - sp.cu_k[:-1]).max()) <= sp.max_k
    assert bool((sp.cu_q[1:] >= sp.cu_q[:-1]).all()) and bool((sp.cu_k[1:] >= sp.cu_k[:-1]).all())
    out, lse = reference_varlen(q.index_select(0, sp.q_rows), k, v, sp.cu_q, sp.cu_k, scale)
    assert bool(torch.isinf(lse).any()) == (min(lengths) < splits)  # the empty chunks are there
    got = combine_kv_splits(out, lse, sp.parts)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-12, rtol=1e-10)


_INTERPRETER_CHECK = textwrap.dedent('''
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from mpm.models import kv_split as ks
    torch.manual_seed(0)
    for splits, rows, h, d in ((3, 70, 3, 16), (5, 41, 2, 32), (2, 9, 1, 16)):
        out = torch.randn(splits * rows, h, d)
        lse = torch.randn(h, splits * rows) * 3
        lse[:, ::7] = float("inf")  # empty chunks
        parts = torch.randperm(splits * rows).view(rows, splits)
        lse[:, parts[:, 0]] = torch.randn(h, rows)  # chunk 0 is never empty
        want = ks.combine_kv_splits(out, lse, parts)
        got = ks._combine_triton(out, lse, parts)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (splits, float((got - want).abs().max()))
    print("combine ok")
''')


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_combine_matches_its_twin_in_the_interpreter() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "combine ok" in proc.stdout


def test_no_split_off_the_gpu() -> None:
    from mpm.models.kv_split import splits_for

    assert splits_for(1, 3, 64, 1025, torch.device("cpu")) == 1
