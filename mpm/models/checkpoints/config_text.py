"""mmengine/mmcv config texts (as mmseg stores them in a checkpoint's ``meta``) read without running them."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Unsupported(Exception):
    pass


def parse_config_text(text: str) -> dict:
    """Top-level assignments of an mmengine/mmcv config text, evaluated *without* running it.

    Only literals, ``dict(...)`` calls, containers and names assigned earlier are
    understood; entries using anything else are left out.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    env: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                env[node.targets[0].id] = _literal(node.value, env)
            except _Unsupported:
                pass
    return env


def _literal(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e, env) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise _Unsupported
            try:
                out[_literal(k, env)] = _literal(v, env)
            except _Unsupported:
                pass
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        out = {}
        for kw in node.keywords:
            try:
                value = _literal(kw.value, env)
            except _Unsupported:
                continue
            if kw.arg is None:
                if isinstance(value, Mapping):
                    out.update(value)
            else:
                out[kw.arg] = value
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, env)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    raise _Unsupported
