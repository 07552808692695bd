"""Get datasets and checkpoints onto disk: download (or take ``--from`` files), verify, unpack.

Layout under a dataset root::

    ROOT/downloads/<archive>            archives, kept so a rerun makes no request
    ROOT/ADEChallengeData2016/...       ade20k
    ROOT/cityscapes/{gtFine,leftImg8bit}/...
    ROOT/VOCdevkit/VOC2010/...          pascal_context (+ trainval_merged.json there)

Checkpoints land in ``DEST/NAME/`` (see :mod:`mpm.data.zoo`).
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pooch

from mpm.data import cityscapes_site
from mpm.io import redact_url, write_json_atomic
from mpm.data.checksums import parse_hash
from mpm.data.credentials import cityscapes_credentials
from mpm.data.download import DEFAULT_RETRIES, fetch_file, manual_hint, place_file
from mpm.data.sources import RemoteFile, dataset_files, mirror_from_env
from mpm.data.sources import cityscapes_site as site_url
from mpm.data.zoo import checkpoint_dir, get_entry
from mpm.errors import ConfigError, DatasetError, DownloadError

log = logging.getLogger(__name__)


def match_local_files(paths: Iterable[str | os.PathLike], files: Sequence[RemoteFile]) -> dict[str, Path]:
    """Map expected file names to ``--from`` paths (files, or folders holding them).

    A file matches by exact name, else by extension when only one expected file has it
    (so a renamed ``model.pth`` still counts as the checkpoint).
    """
    wanted = {f.filename for f in files}
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            hits = {name: path / name for name in wanted if (path / name).is_file()}
            if not hits:
                raise ConfigError(f"--from folder {path} holds none of: {', '.join(sorted(wanted))}")
            found.update(hits)
            continue
        if not path.exists():
            raise ConfigError(f"--from path {path} does not exist")
        if path.name in wanted:
            found[path.name] = path
            continue
        same_suffix = [name for name in wanted if Path(name).suffix == path.suffix and name not in found]
        if len(same_suffix) == 1:
            found[same_suffix[0]] = path
            continue
        raise ConfigError(f"--from file {path} matches none of the expected files: {', '.join(sorted(wanted))}")
    return found


def _check_archive(path: Path, kind: str | None) -> None:
    """Cheap integrity check for files without a known checksum."""
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise DownloadError(f"{path} is not a readable zip archive")
    if kind == "tar" and not tarfile.is_tarfile(path):
        raise DownloadError(f"{path} is not a readable tar archive")


def _stamp_path(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}.extracted")


def _first_member(archive: Path, kind: str) -> str | None:
    """A file the archive holds, to check later that its extraction is still there."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            return next((n for n in zf.namelist() if not n.endswith("/")), None)
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile():
                return info.name
    return None


def _stamp(archive: Path, target: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "extract_to": str(target)}


def unpack(archive: Path, kind: str, target: Path, force: bool = False) -> bool:
    """Extract ``archive`` into ``target`` with pooch, once (a stamp file remembers).

    Returns True when it extracted.
    """
    stamp_file = _stamp_path(archive)
    stamp = _stamp(archive, target)
    if not force and stamp_file.is_file():
        try:
            done = json.loads(stamp_file.read_text())
            probe = done.pop("probe", None)
            if done == stamp and (probe is None or (target / probe).exists()):
                return False
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    processor = {"zip": pooch.Unzip, "tar": pooch.Untar}.get(kind)
    if processor is None:
        raise ConfigError(f"unknown archive kind {kind!r} for {archive}")
    target.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s into %s", archive, target)
    try:
        processor(extract_dir=str(target.resolve()))(str(archive.resolve()), "download", None)
        probe = _first_member(archive, kind)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DatasetError(f"cannot extract {archive}: {err}") from None
    write_json_atomic(stamp_file, dict(stamp, probe=probe))
    return True


def _fetch_remote(rf: RemoteFile, target: Path, *, local: Path | None, mirror: str | None,
                  retries: int, progress: bool | None, session_box: dict, cli: str, verify: bool = True) -> Path:
    expected = parse_hash(rf.hash) if verify else None
    if local is not None:
        place_file(local, target, expected)
        if expected is None:
            _check_archive(target, rf.unpack)
        return target
    if rf.package_id is None:
        url = rf.url(mirror)
        fetch_file(url, target, expected, retries=retries, progress=progress,
                   hint=manual_hint(url, target).replace("--from PATH", f"`{cli} --from PATH`"))
        return target
    # a Cityscapes package: present files were verified when they arrived
    if target.is_file():
        return target
    site = site_url(mirror)
    if "session" not in session_box:
        session_box["session"] = cityscapes_site.login(site, cityscapes_credentials(_host(site)))
    session = session_box["session"]
    md5 = cityscapes_site.package_md5(session, site, rf.package_id)
    url = cityscapes_site.package_url(site, rf.package_id)
    hint = (f"to place it by hand, log in at {redact_url(site)} and download {rf.filename} "
            f"(packageID={rf.package_id}), then run `{cli} --from PATH`")
    fetch_file(url, target, parse_hash(f"md5:{md5}") if md5 and verify else None, session=session, retries=retries,
               progress=progress, allow_redirects=False, hint=hint)
    return target


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or url


def _fetch_all(name: str, files: Sequence[RemoteFile], target_of: Callable[[RemoteFile], Path], *,
               from_paths: Iterable[str | os.PathLike], mirror: str | None, retries: int,
               progress: bool | None, verify: bool, cli: str) -> Iterator[tuple[RemoteFile, Path]]:
    """Fetch (or place) each of ``name``'s ``files`` at ``target_of(file)``, in order; yield (file, target)
    after each, so that the caller can unpack it before the next transfer. One Cityscapes login serves all."""
    if not verify:
        log.warning("checksums of %s are NOT verified (--no-verify)", name)
    local = match_local_files(from_paths, files)
    mirror = mirror_from_env(mirror)
    session_box: dict = {}
    for rf in files:
        target = target_of(rf)
        _fetch_remote(rf, target, local=local.get(rf.filename), mirror=mirror, retries=retries,
                      progress=progress, session_box=session_box, cli=cli, verify=verify)
        yield rf, target


def fetch_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    from_paths: Iterable[str | os.PathLike] = (),
    mirror: str | None = None,
    extract: bool = True,
    retries: int = DEFAULT_RETRIES,
    progress: bool | None = None,
    verify: bool = True,
) -> list[Path]:
    """Download (or place) and unpack a dataset under ``root``; return its files.

    ``mirror`` replaces every base URL (for Cityscapes: the site base). Files already
    present and verified are not requested again; archives are unpacked once.
    ``verify=False`` skips the checksums (for a source whose published hash is wrong).
    """
    files = dataset_files(name)
    root = Path(root)
    out = []
    for rf, target in _fetch_all(name, files, lambda rf: root / rf.dest / rf.filename, from_paths=from_paths,
                                 mirror=mirror, retries=retries, progress=progress, verify=verify,
                                 cli=f"mpm fetch dataset {name} --root {root}"):
        if extract and rf.unpack:
            unpack(target, rf.unpack, root / rf.extract_to)
        out.append(target)
    return out


def fetch_checkpoint(
    name: str,
    dest: str | os.PathLike,
    *,
    from_paths: Iterable[str | os.PathLike] = (),
    mirror: str | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: bool | None = None,
    verify: bool = True,
) -> Path:
    """Download (or place) checkpoint ``name`` into ``dest/NAME/``; return the weights path."""
    entry = get_entry(name)
    folder = checkpoint_dir(dest, name)
    for _ in _fetch_all(name, entry.files, lambda rf: folder / rf.filename, from_paths=from_paths, mirror=mirror,
                        retries=retries, progress=progress, verify=verify,
                        cli=f"mpm fetch checkpoint {name} --dest {dest}"):
        pass
    return folder / entry.checkpoint_file
