"""The Cityscapes download site: login form, package files and their md5 sums.

The official site (https://www.cityscapes-dataset.com/) serves its archives to a
logged-in session only: POST ``login/`` with ``username``, ``password`` and
``submit=Login`` answers a redirect (302) on success; then
``file-handling/?packageID=N`` streams the archive and ``md5-sum/?packageID=N`` gives
its md5. This mirrors cityscapesscripts' own downloader. The password travels only in
the POST body; no message here ever includes it (nor a password in the site URL:
:func:`mpm.io.redact_url`).
"""

from __future__ import annotations

import re

import requests

from mpm.data.credentials import Credentials
from mpm.data.download import DEFAULT_TIMEOUT
from mpm.errors import DownloadError
from mpm.io import redact_url

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def login(site: str, credentials: Credentials, session: requests.Session | None = None,
          timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> requests.Session:
    """A session logged in to the Cityscapes site at ``site``."""
    session = session or requests.Session()
    url = site + "login/"
    try:
        session.get(url, allow_redirects=False, timeout=timeout)  # session cookie
        resp = session.post(
            url,
            data={"username": credentials.username, "password": credentials.password, "submit": "Login"},
            allow_redirects=False,
            timeout=timeout,
        )
    except requests.RequestException as err:
        raise DownloadError(
            f"cannot reach the Cityscapes login page {redact_url(url)} ({type(err).__name__})") from None
    if resp.status_code != 302:
        raise DownloadError(
            f"Cityscapes login at {redact_url(url)} failed for user {credentials.username!r} (credentials from "
            f"{credentials.source}): HTTP {resp.status_code}; check the user name and password"
        )
    return session


def package_url(site: str, package_id: int) -> str:
    """The download URL of a Cityscapes package."""
    return f"{site}file-handling/?packageID={package_id}"


def package_md5(session: requests.Session, site: str, package_id: int,
                timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> str | None:
    """The md5 the site publishes for a package, or None if it gives none."""
    url = f"{site}md5-sum/?packageID={package_id}"
    try:
        resp = session.get(url, allow_redirects=False, timeout=timeout)
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    words = resp.text.split()
    return words[0].lower() if words and _MD5.match(words[0]) else None
