"""Account credentials for the Cityscapes site, from the environment or a netrc file.

Credentials are never read from configuration files, and never printed: the
:class:`Credentials` ``repr`` hides the password, and error messages name only where
the credentials were looked for.
"""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path

from mpm.errors import DownloadError

USERNAME_ENV = "CITYSCAPES_USERNAME"
PASSWORD_ENV = "CITYSCAPES_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """A user name and password; the password never shows in ``repr`` or ``str``."""

    username: str
    password: str = field(repr=False)
    source: str = "environment"

    def __str__(self) -> str:
        return f"{self.username} (from {self.source})"


def netrc_path() -> Path:
    """The netrc file consulted: ``$NETRC`` or ``~/.netrc``."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def from_netrc(host: str, path: str | os.PathLike | None = None) -> Credentials | None:
    """Credentials for ``host`` from a netrc file, or None if it has none."""
    path = Path(path) if path is not None else netrc_path()
    if not path.is_file():
        return None
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as err:
        # the parse error's message may quote the offending line: do not repeat it
        raise DownloadError(f"cannot parse netrc file {path} (line {getattr(err, 'lineno', '?')})") from None
    if not auth or not auth[0] or auth[2] is None:
        return None
    return Credentials(auth[0], auth[2], source=f"netrc {path}")


def cityscapes_credentials(host: str) -> Credentials:
    """Credentials for the Cityscapes site at ``host``: environment first, then netrc."""
    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        return Credentials(user, password, source="environment")
    found = from_netrc(host)
    if found is not None:
        return found
    raise DownloadError(
        f"Cityscapes needs a registered account: set {USERNAME_ENV} and {PASSWORD_ENV}, "
        f"or add 'machine {host} login USER password PASS' to {netrc_path()} "
        "(or download the archives by hand and pass them with --from)"
    )
