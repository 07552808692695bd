"""What every layer shares about files and what it shows of them.

Atomic writes: write to a temporary file beside the target, then rename; a reader
never sees a half-written file, either the old content or the new one.

Redaction: :func:`redact_url` hides the credentials a URL may carry (a password in
``http://user:secret@host/``, ``?token=``...) wherever a URL is shown, logged or
stored; :class:`RedactingFilter` does the same to log records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file is removed if the block raises. ``suffix`` lets writers that
    pick a format from the file name (PIL) see the right extension.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = target  # never removed: only a name bound below, before its file exists, is
    try:
        for _ in range(100):
            # the name is known before the file is created, so an interrupt at any point leaves nothing
            tmp_path = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix or '.tmp'}")
            try:
                os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 32 random bits
            raise FileExistsError(f"no free temporary name beside {target}")
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        if tmp_path != target and tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (sorted keys, trailing newline) to ``target`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
    return write_text_atomic(target, text)


def save_image_atomic(target: str | os.PathLike, image, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format follows ``target``'s extension."""
    target = Path(target)
    with atomic_path(target, suffix=target.suffix) as tmp:
        image.save(tmp, **save_kwargs)
    return target


# --------------------------------------------------------------------------- redaction

REDACTED = "***"
#: query parameters whose value is a credential (case-insensitive)
SECRET_QUERY_PARAMS = (
    "token", "access_token", "refresh_token", "id_token", "auth", "auth_token", "key", "api_key", "apikey",
    "password", "passwd", "pwd", "secret", "client_secret", "signature", "sig", "x-amz-signature",
    "x-amz-credential", "x-amz-security-token",
)
_URL_NETLOC = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^\s/?#'\"<>]*)")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r")=)(?P<value>[^&#;\s'\"<>]*)",
    re.IGNORECASE,
)


def _redact_netloc(match: re.Match) -> str:
    netloc = match.group("netloc")
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return match.group(0)
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:{REDACTED}" if colon else REDACTED  # a lone userinfo is often a token itself
    return f"{match.group('scheme')}{shown}@{host}"


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message holding URLs) with its credentials replaced by ``***``.

    ``http://user:secret@host/a`` -> ``http://user:***@host/a``; a userinfo without a
    password (often a token: ``https://TOKEN@host/``) becomes ``***``; the values of
    credential-like query parameters (:data:`SECRET_QUERY_PARAMS`: ``?token=``,
    ``access_token=``, ``key=``...) become ``***``, also in a bare ``/path?token=x``
    as HTTP libraries quote it. Everything else is left as it was.
    """
    if not text:
        return text
    text = _URL_NETLOC.sub(_redact_netloc, str(text))
    return _SECRET_QUERY.sub(lambda m: m.group("key") + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record with :func:`redact_url` applied to its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
