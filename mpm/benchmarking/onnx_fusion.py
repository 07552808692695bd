"""Fuse the exported attention into ONNX Runtime's ``com.microsoft.MultiHeadAttention``.

The TorchScript exporter writes a timm attention as about fifteen plain ops::

    qkv (B, N, 3C) -> Reshape (B, N, 3, H, D) -> Transpose (3, B, H, N, D) -> Split + Squeeze
    -> q * scale @ k^T -> Softmax -> @ v -> Transpose (B, N, H, D) -> Reshape (B, N, C)

which materialises the (B, H, N, N) logits and their softmax, and runs each op as its own
parallel section. ORT's CPU ``MultiHeadAttention`` computes the same from q, k, v of shape
(B, N, C) in one kernel (blocked over keys, no N x N tensor in memory). :func:`fuse_attention`
finds that chain and replaces it with ``Split`` (B, N, 3C) -> three (B, N, C) and one
``MultiHeadAttention``; nodes the rest of the graph still reads (a segment's keys output)
stay. Attention with a bias or a key mask (proportional attention, padded batches) is left
as exported: only the plain chain is fused.

>>> model = onnx.load("segment0.onnx"); fused = fuse_attention(model); onnx.save(model, "segment0.onnx")
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

#: the domain of ORT's contrib operators (opset version 1)
MS_DOMAIN = "com.microsoft"


def _constant_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _attr(node, name: str):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _static_dims(model) -> dict[str, list[int | None]]:
    """Each value's dims after ONNX shape inference (None where symbolic)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shape = vi.type.tensor_type.shape
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return dims


@dataclass
class _Chain:
    """One matched attention chain: the qkv tensor, its heads, scale, output and the nodes it spans."""

    qkv: str
    heads: int
    width: int
    scale: float
    out: str
    nodes: list


def _match(softmax, producer: dict, consumers: dict, consts: dict, dims: dict) -> _Chain | None:
    """The plain attention chain around ``softmax``, or None where any link differs."""

    def only_consumer(name: str, op: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def made_by(name: str, op: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op else None

    if _attr(softmax, "axis") not in (-1, 3):
        return None
    logits = made_by(softmax.input[0], "MatMul")
    pv = only_consumer(softmax.output[0], "MatMul")
    if logits is None or pv is None or pv.input[0] != softmax.output[0]:
        return None
    mul, kt = made_by(logits.input[0], "Mul"), made_by(logits.input[1], "Transpose")
    if mul is None or kt is None or list(_attr(kt, "perm") or []) != [0, 1, 3, 2]:
        return None
    scale_name = next((i for i in mul.input if i in consts and consts[i].size == 1), None)
    if scale_name is None:
        return None
    q_name = mul.input[1] if mul.input[0] == scale_name else mul.input[0]
    names = (q_name, kt.input[0], pv.input[1])
    squeezes = [made_by(n, "Squeeze") for n in names]
    if any(s is None for s in squeezes):
        return None
    split = made_by(squeezes[0].input[0], "Split")
    if split is None or _attr(split, "axis") not in (0, None) or len(split.output) != 3:
        return None
    if [s.input[0] for s in squeezes] != list(split.output):
        return None
    perm = made_by(split.input[0], "Transpose")
    if perm is None or list(_attr(perm, "perm") or []) != [2, 0, 3, 1, 4]:
        return None
    reshape = made_by(perm.input[0], "Reshape")
    out_t = only_consumer(pv.output[0], "Transpose")
    if reshape is None or out_t is None or list(_attr(out_t, "perm") or []) != [0, 2, 1, 3]:
        return None
    out_r = only_consumer(out_t.output[0], "Reshape")
    heads_dim = _heads_and_head_dim(reshape, producer, consts, dims.get(q_name))
    if out_r is None or heads_dim is None:
        return None
    heads, head_dim = heads_dim
    scale = float(consts[scale_name].reshape(()))
    nodes = [reshape, perm, split, *squeezes, mul, kt, logits, softmax, pv, out_t, out_r]
    return _Chain(reshape.input[0], heads, heads * head_dim, scale, out_r.output[0], nodes)


def _heads_and_head_dim(reshape, producer: dict, consts: dict, q_dims) -> tuple[int, int] | None:
    """(H, D) of the (B, N, 3, H, D) ``reshape``: from its shape constant, from the constant tail
    of the Concat that builds it (dynamic token axis), or from q's inferred (B, H, N, D)."""
    shape = consts.get(reshape.input[1])
    if shape is not None and shape.size == 5 and shape[3] > 0 and shape[4] > 0:
        return int(shape[3]), int(shape[4])
    concat = producer.get(reshape.input[1])
    if concat is not None and concat.op_type == "Concat" and len(concat.input) == 5:
        tail = [consts.get(name) for name in concat.input[3:]]
        if all(t is not None and t.size == 1 and int(t.reshape(())) > 0 for t in tail):
            return int(tail[0].reshape(())), int(tail[1].reshape(()))
    if q_dims and len(q_dims) == 4 and q_dims[1] and q_dims[3]:
        return int(q_dims[1]), int(q_dims[3])
    return None


def fuse_attention(model) -> int:
    """Replace every plain attention chain of ``model`` (an ``onnx.ModelProto``, changed in
    place) by one ``com.microsoft.MultiHeadAttention``; returns how many were fused."""
    from onnx import helper

    graph = model.graph
    consts = _constant_values(graph)
    dims = _static_dims(model)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    chains = [c for c in (_match(n, producer, consumers, consts, dims) for n in graph.node
                          if n.op_type == "Softmax") if c is not None]
    if not chains:
        return 0
    replaced: dict[int, list] = {}  # id of a chain's last node -> the nodes put in its place
    for k, c in enumerate(chains):
        split_sizes = helper.make_tensor(f"mha{k}_split", 7, [3], [c.width] * 3)  # INT64
        graph.initializer.append(split_sizes)
        q, key, v = (f"mha{k}_{part}" for part in ("q", "k", "v"))
        replaced[id(c.nodes[-1])] = [
            helper.make_node("Split", [c.qkv, split_sizes.name], [q, key, v], axis=2, name=f"mha{k}_split"),
            helper.make_node("MultiHeadAttention", [q, key, v], [c.out], domain=MS_DOMAIN, name=f"mha{k}",
                             num_heads=c.heads, scale=c.scale),
        ]
    kept = []
    for node in graph.node:  # the new nodes take the final Reshape's place; the rest of each chain
        kept.extend(replaced.get(id(node), [node]))  # goes below where nothing else reads it
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(chains)


def _drop_unused(graph) -> None:
    """Remove every node and initializer that no graph output depends on."""
    needed = {o.name for o in graph.output}
    alive = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            alive.append(node)
            needed.update(i for i in node.input if i)
    alive.reverse()
    del graph.node[:]
    graph.node.extend(alive)
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
