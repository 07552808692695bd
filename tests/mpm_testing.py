"""Helpers shared by several test modules (importable: ``pythonpath = tests`` in pyproject)."""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0, spread: float = 0.2) -> nn.Module:
    """Give every parameter random values, LayerNorm weights and biases included, so a
    comparison of two implementations cannot pass on default initialisations."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                if isinstance(module, nn.LayerNorm):
                    p.copy_(1.0 + spread * noise if name == "weight" else spread * noise)
                elif p.dim() >= 2 and p.shape[0] != 1:
                    p.copy_(noise / p[0].numel() ** 0.5)
                else:
                    p.copy_(1.5 * spread * noise)
    return model.eval()


def groups_to_output(groups: list[list[int]], x: torch.Tensor, size: torch.Tensor):
    """Reference merge: output slot s = size-weighted mean of the tokens ``groups[s]``, by plain loops.

    Returns ``(out, out_size, index)``.
    """
    index = [-1] * x.shape[0]
    rows, sizes = [], []
    for s, group in enumerate(groups):
        tot = sum(float(size[t]) for t in group)
        rows.append(sum(x[t] * size[t] for t in group) / tot)
        sizes.append(tot)
        for t in group:
            index[t] = s
    assert -1 not in index
    return torch.stack(rows), torch.tensor(sizes, dtype=x.dtype), torch.tensor(index)


def synthetic_set(root, *, n_train: int, n_val: int, size: int = 64, seed: int = 0):
    """A small synthetic set written and prepared (manifests) under ``root``; returns ``root``."""
    from mpm.data.prepare import prepare_dataset
    from mpm.data.synthetic import generate

    generate(root, n_train=n_train, n_val=n_val, size=size, seed=seed)
    prepare_dataset("synthetic", root, progress=False)
    return root
