"""The attention backends: one registry, importable without torch.

Every layer that names a backend reads it here: the attention code
(:mod:`mpm.models.attention`), the encoder's packed layout, the patch API, the
ONNX export, the ``mpm eval`` / ``mpm bench`` options, the tables' column
labels, the workflow's wildcard constraints and its configuration schema
(``workflow/schemas/config.schema.yaml``'s enums are checked against
:func:`backend_names` by ``tests/test_backends.py``).

>>> get_backend("fa2").cuda_label
'FA2 on'
>>> backend_names()
('math', 'sdpa', 'fa2', 'triton', 'flash-attn')
"""

from __future__ import annotations

from dataclasses import dataclass

from mpm.errors import BackendError

__all__ = ["AttentionBackend", "backend_names", "backends", "cuda_labels", "exportable_backends", "get_backend",
           "varlen_backends"]


@dataclass(frozen=True)
class AttentionBackend:
    """What the rest of the package needs to know about one attention backend.

    Attributes:
        name: the name on the command line, in configs, paths and records.
        summary: one line of what runs.
        devices: device types it runs on (``()``: every device).
        half_only: whether it needs float16 / bfloat16 inputs.
        varlen: whether padded batches run as packed variable-length sequences (cu_seqlens) end to end.
        exportable: whether its computation exports to plain ONNX ops.
        takes_bias: whether it accepts an additive logit bias (ToMe's proportional attention).
        package: an optional Python package it needs (import name), or None.
        install: how to install ``package`` (shown when it is missing).
        cuda_label: its column label on a CUDA device in the tables (``FA2 off`` / ``FA2 on`` /
            ``Triton FA``), or None when the tables show no column for it.
    """

    name: str
    summary: str
    devices: tuple[str, ...] = ()
    half_only: bool = False
    varlen: bool = False
    exportable: bool = False
    takes_bias: bool = True
    package: str | None = None
    install: str = ""
    cuda_label: str | None = None

    def runs_on(self, device_type: str) -> bool:
        return not self.devices or device_type in self.devices


_REGISTRY: dict[str, AttentionBackend] = {}


def _register(backend: AttentionBackend) -> AttentionBackend:
    _REGISTRY[backend.name] = backend
    return backend


_register(AttentionBackend("math", "explicit softmax(q k^T * scale) v (Segmenter's own code)", exportable=True,
                           cuda_label="FA2 off"))
_register(AttentionBackend("sdpa", "PyTorch scaled_dot_product_attention, PyTorch picks the kernel",
                           exportable=True))
_register(AttentionBackend("fa2", "PyTorch SDPA restricted to its FlashAttention-2 kernel", devices=("cuda",),
                           half_only=True, varlen=True, takes_bias=False, cuda_label="FA2 on"))
_register(AttentionBackend("triton", "mpm's Triton FlashAttention forward (mpm.models.triton_attention), padded or "
                           "packed", devices=("cuda",), half_only=True, varlen=True, takes_bias=False,
                           package="triton", install="it ships with the CUDA builds of torch",
                           cuda_label="Triton FA"))
_register(AttentionBackend("flash-attn", "the flash-attn package (flash_attn_func / flash_attn_varlen_func)",
                           devices=("cuda",), half_only=True, varlen=True, takes_bias=False, package="flash_attn",
                           install="pip install 'mpm[flash]'"))


def backends() -> tuple[AttentionBackend, ...]:
    """Every registered backend, in registration order."""
    return tuple(_REGISTRY.values())


def backend_names() -> tuple[str, ...]:
    """The registered backend names, in registration order (the CLI's choices, the schema's enum)."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> AttentionBackend:
    """The backend called ``name``; :class:`~mpm.errors.BackendError` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise BackendError(f"unknown attention backend {name!r}; expected one of {', '.join(_REGISTRY)}") from None


def varlen_backends() -> tuple[str, ...]:
    """Backends whose attention runs packed variable-length sequences."""
    return tuple(b.name for b in _REGISTRY.values() if b.varlen)


def exportable_backends() -> tuple[str, ...]:
    """Backends whose computation exports to plain ONNX ops."""
    return tuple(b.name for b in _REGISTRY.values() if b.exportable)


def cuda_labels() -> dict[str, str]:
    """Backend -> its column label on a CUDA device (``{"math": "FA2 off", "fa2": "FA2 on", "triton":
    "Triton FA"}``)."""
    return {b.name: b.cuda_label for b in _REGISTRY.values() if b.cuda_label}
