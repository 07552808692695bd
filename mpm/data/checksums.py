"""Checksums: parse ``"alg:hex"`` strings, hash files, compare (full or prefix).

Hashes follow pooch's notation, ``"md5:…"``, ``"sha1:…"``, ``"sha256:…"`` (bare hex
means sha256). A hex string shorter than the algorithm's digest is a *prefix*: the
mmsegmentation checkpoints carry the first 8 hex digits of their sha256 in their
file names, and that is all we know of them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


from mpm.errors import ConfigError

_DIGEST_HEX_LEN = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class ExpectedHash:
    """A known checksum: algorithm and (possibly partial) lowercase hex digest."""

    alg: str
    hex: str

    @property
    def is_prefix(self) -> bool:
        return len(self.hex) < _DIGEST_HEX_LEN[self.alg]

    @property
    def pooch_hash(self) -> str | None:
        """The ``alg:hex`` string pooch understands, or None for a prefix."""
        return None if self.is_prefix else f"{self.alg}:{self.hex}"

    def matches(self, actual_hex: str) -> bool:
        return actual_hex.lower().startswith(self.hex)

    def describe(self) -> str:
        return f"{self.alg}:{self.hex}" + ("…" if self.is_prefix else "")

    def __str__(self) -> str:
        return self.describe()


def parse_hash(value: str | None) -> ExpectedHash | None:
    """Parse ``"alg:hex"`` (or bare sha256 hex); None or ``"none"`` means unknown."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    alg, _, hexpart = value.strip().rpartition(":")
    alg = (alg or "sha256").lower()
    hexpart = hexpart.lower()
    if alg not in _DIGEST_HEX_LEN:
        raise ConfigError(f"unknown hash algorithm {alg!r} in {value!r} (use one of {sorted(_DIGEST_HEX_LEN)})")
    if not hexpart or len(hexpart) > _DIGEST_HEX_LEN[alg] or any(c not in "0123456789abcdef" for c in hexpart):
        raise ConfigError(f"malformed {alg} hash {value!r}")
    return ExpectedHash(alg, hexpart)


def new_hasher(alg: str = "sha256"):
    """A hashlib object for ``alg``."""
    return hashlib.new(alg)


def file_digest(path: str | os.PathLike, alg: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = new_hasher(alg)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Full sha256 hex digest of a file."""
    return file_digest(path, "sha256")


def file_matches(path: str | os.PathLike, expected: ExpectedHash | None) -> tuple[bool, str | None]:
    """Return (matches, actual hex) for ``path``; (True, None) when nothing is expected."""
    if expected is None:
        return True, None
    actual = file_digest(path, expected.alg)
    return expected.matches(actual), actual
