"""Resumable, verified downloads on top of pooch.

pooch does the bookkeeping (``pooch.retrieve``: temporary file, final move, logging)
and hands the transfer to a *downloader* callable. :class:`ResumableDownloader` is
such a callable: it streams into ``NAME.part`` beside the target, resumes an
interrupted transfer with an HTTP ``Range`` request, retries a bounded number of
times with exponential backoff, shows a tqdm bar on long transfers and checks the
checksum before the file gets its final name. A mismatch deletes the partial file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from mpm.io import atomic_path, redact_url
from mpm.data.checksums import ExpectedHash, file_matches
from mpm.errors import DownloadError

log = logging.getLogger(__name__)

#: seconds before the first retry; doubled on each further one (env override for tests/CI)
BACKOFF_ENV = "MPM_DOWNLOAD_BACKOFF"
DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = (15.0, 60.0)  # connect, read (seconds)
_PROGRESS_MIN_BYTES = 8 << 20  # show a bar only for transfers above 8 MiB
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Retryable(Exception):
    """A failure worth another attempt (connection lost, 5xx, short transfer)."""


def default_backoff() -> float:
    """Base backoff in seconds: ``$MPM_DOWNLOAD_BACKOFF`` or 1.0."""
    try:
        return float(os.environ.get(BACKOFF_ENV, "1.0"))
    except ValueError:
        return 1.0


def part_path(target: str | os.PathLike) -> Path:
    """The partial-download file kept beside ``target`` (``NAME.part``)."""
    target = Path(target)
    return target.with_name(target.name + ".part")


def manual_hint(url: str, target: Path) -> str:
    """How to get a file in place without this machine reaching ``url``."""
    return (
        f"to place it by hand, download {redact_url(url)} on a machine with access and copy it to {target}, "
        "or pass it with --from PATH (it is checksum-verified too)"
    )


class ResumableDownloader:
    """A pooch downloader that resumes, retries, verifies and only then renames.

    Parameters
    ----------
    target: the final file; the transfer goes to ``target.part`` first.
    expected: checksum (full or prefix) the file must match; None skips the check.
    session: a ``requests.Session`` (e.g. one holding a login cookie).
    retries: further attempts after the first one for retryable failures.
    backoff: seconds before the first retry, doubled each time.
    progress: show a tqdm bar; None = only on a terminal and above 8 MiB.
    allow_redirects: follow HTTP redirects (the Cityscapes site answers a
        redirect to its login page when the session is not logged in).
    hint: appended to error messages (how to place the file by hand).
    """

    def __init__(
        self,
        target: str | os.PathLike,
        expected: ExpectedHash | None = None,
        *,
        session: requests.Session | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        chunk_size: int = 1 << 20,
        progress: bool | None = None,
        allow_redirects: bool = True,
        hint: str = "",
    ) -> None:
        self.target = Path(target)
        self.part = part_path(self.target)
        self.expected = expected
        self.session = session or requests.Session()
        self.retries = max(0, int(retries))
        self.backoff = default_backoff() if backoff is None else float(backoff)
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.progress = progress
        self.allow_redirects = allow_redirects
        self.hint = hint
        self.attempts = 0

    # -- pooch's downloader protocol -------------------------------------------------
    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        if check_only:
            return self._available(url)
        self.download(url)
        # pooch checks the (full) hash again and moves output_file to its final name
        os.replace(self.part, output_file)
        return None

    # -- the transfer -----------------------------------------------------------------
    def download(self, url: str) -> Path:
        """Bring ``url`` into ``self.part`` completely and verify it; return the part path."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.attempts += 1
            try:
                self._attempt(url)
                break
            except _Retryable as err:
                if self.attempts > self.retries:
                    raise DownloadError(
                        f"could not download {redact_url(url)} after {self.attempts} attempt(s): {err}"
                        + (f"; {self.hint}" if self.hint else "")
                    ) from None
                wait = self.backoff * 2 ** (self.attempts - 1)
                log.warning("download of %s failed (%s); retrying in %.1f s", redact_url(url), err, wait)
                time.sleep(wait)
        self._verify(url)
        return self.part

    def _attempt(self, url: str) -> None:
        offset = self.part.stat().st_size if self.part.exists() else 0
        # identity encoding: byte ranges then address the file itself, not a gzip stream
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            log.info("resuming %s at byte %d", redact_url(url), offset)
        try:
            resp = self.session.get(
                url, stream=True, headers=headers, timeout=self.timeout, allow_redirects=self.allow_redirects
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _Retryable(f"cannot connect ({_short(err)})") from None
        except requests.RequestException as err:
            raise DownloadError(f"cannot download {redact_url(url)}: {_short(err)}; {self.hint}") from None
        with resp:
            status = resp.status_code
            if status == 416 and offset:
                # nothing left to send: what we hold is complete (the checksum will tell)
                return
            if status in _RETRY_STATUS:
                raise _Retryable(f"HTTP {status} {resp.reason}")
            if status >= 300:
                location = redact_url(resp.headers.get("Location", ""))
                where = f" (redirect to {location}: not logged in?)" if status < 400 else ""
                raise DownloadError(
                    f"HTTP {status} {resp.reason} for {redact_url(url)}{where}"
                    + (f"; {self.hint}" if self.hint else "")
                )
            mode, start, total = self._plan(resp, offset)
            if mode == "wb" and offset:
                log.info("server ignored the Range request for %s; starting over", redact_url(url))
            self._stream(resp, mode, start, total)

    def _plan(self, resp: requests.Response, offset: int) -> tuple[str, int, int | None]:
        """Append or overwrite, the first byte this response holds, and the full size."""
        if resp.status_code == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                self.part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at an unexpected range ({resp.headers.get('Content-Range')!r})")
            total = None if match.group(3) == "*" else int(match.group(3))
            return "ab", offset, total
        length = resp.headers.get("Content-Length")
        return "wb", 0, int(length) if length and length.isdigit() else None

    def _stream(self, resp: requests.Response, mode: str, start: int, total: int | None) -> None:
        show = self.progress
        if show is None:
            show = sys.stderr.isatty() and (total is None or total - start > _PROGRESS_MIN_BYTES)
        with open(self.part, mode) as fh, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=self.target.name, disable=not show, leave=False, file=sys.stderr,
        ) as bar:
            try:
                for chunk in _chunks(resp, self.chunk_size):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
                fh.flush()
                raise _Retryable(f"connection lost after {fh.tell()} bytes ({_short(err)})") from None
            except OSError as err:  # the disk, not the network
                raise DownloadError(f"cannot write {self.part}: {err}") from None
            size = fh.tell()
        if total is not None and size < total:
            raise _Retryable(f"transfer ended early ({size} of {total} bytes)")
        if total is not None and size > total:
            self.part.unlink(missing_ok=True)
            raise _Retryable(f"received {size} bytes, more than the announced {total}")

    def _verify(self, url: str) -> None:
        ok, actual = file_matches(self.part, self.expected)
        if not ok:
            self.part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {redact_url(url)}: expected {self.expected}, arrived "
                f"{self.expected.alg}:{actual} ({self.part.name} deleted)"
            )

    def _available(self, url: str) -> bool:
        try:
            resp = self.session.head(url, timeout=self.timeout, allow_redirects=self.allow_redirects)
        except requests.RequestException:
            return False
        return resp.status_code < 400


def _chunks(resp: requests.Response, size: int):
    """The body as it arrives: ``read1`` hands over bytes already received, so a
    connection cut mid-chunk loses nothing that can be kept for a resume."""
    raw = resp.raw
    if hasattr(raw, "read1"):  # urllib3 >= 2
        while chunk := raw.read1(size):
            yield chunk
    else:
        yield from resp.iter_content(min(size, 1 << 16))


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def _short(err: BaseException) -> str:
    """A one-line description of a requests/urllib3 error (credentials in URLs redacted)."""
    text = str(err).splitlines()[0] if str(err) else ""
    errno = _ERRNO.search(text)
    if errno:
        text = errno.group(0).strip()
    return redact_url(f"{type(err).__name__}: {text}"[:300]) if text else type(err).__name__


def fetch_file(
    url: str,
    target: str | os.PathLike,
    expected: ExpectedHash | None = None,
    *,
    session: requests.Session | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff: float | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    allow_redirects: bool = True,
    hint: str | None = None,
) -> tuple[Path, bool]:
    """Download ``url`` to ``target`` unless it is already there and verified.

    Returns ``(target, downloaded)``; ``downloaded`` is False when the file was
    present (no request is made then). A present file with the wrong checksum is
    downloaded again.
    """
    target = Path(target).resolve()
    if target.is_file():
        ok, actual = file_matches(target, expected)
        if ok:
            log.info("%s already present", target)
            return target, False
        log.warning("%s does not match %s (has %s); downloading it again", target, expected, actual)
        target.unlink()
    downloader = ResumableDownloader(
        target, expected, session=session, retries=retries, backoff=backoff, timeout=timeout,
        progress=progress, allow_redirects=allow_redirects,
        hint=manual_hint(url, target) if hint is None else hint,
    )
    import pooch  # imported here: `mpm` starts without it (the GPU host has none)

    pooch_logger = pooch.get_logger()
    level = pooch_logger.level
    pooch_logger.setLevel(logging.WARNING)
    try:
        pooch.retrieve(
            url, known_hash=expected.pooch_hash if expected else None,
            fname=target.name, path=target.parent, downloader=downloader,
        )
    except ValueError as err:  # pooch's own hash check (should not differ from ours)
        raise DownloadError(redact_url(f"checksum mismatch for {url}: {err}")) from None
    finally:
        pooch_logger.setLevel(level)
    log.info("downloaded %s to %s", redact_url(url), target)
    return target, True


def place_file(source: str | os.PathLike, target: str | os.PathLike, expected: ExpectedHash | None = None) -> Path:
    """Put an already-downloaded ``source`` at ``target`` (hard link, else copy).

    The source is checksum-verified first; ``target`` appears atomically.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise DownloadError(f"--from file {source} does not exist or is not a file")
    ok, actual = file_matches(source, expected)
    if not ok:
        raise DownloadError(
            f"{source} does not match the expected checksum: expected {expected}, found {expected.alg}:{actual}"
        )
    if target.exists() and target.resolve() == source.resolve():
        return target
    if target.exists() and os.path.samefile(source, target):
        return target
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
    log.info("placed %s at %s", source, target)
    return target
