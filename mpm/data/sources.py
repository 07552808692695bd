"""Where each dataset's files come from: URLs, checksums, and where they go.

URLs are ``base + path``; a *mirror* replaces the base (``--mirror URL`` or the
``MPM_MIRROR`` environment variable), which is how tests point everything at a local
server. Cityscapes files are not plain URLs: they need a login on the official site
and are addressed by package id (see :mod:`mpm.data.cityscapes_site`); the site's
base is overridable with ``MPM_CITYSCAPES_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mpm.errors import ConfigError

MIRROR_ENV = "MPM_MIRROR"
CITYSCAPES_URL_ENV = "MPM_CITYSCAPES_URL"
CITYSCAPES_SITE = "https://www.cityscapes-dataset.com/"


@dataclass(frozen=True)
class RemoteFile:
    """One file to download.

    ``dest`` is the folder (relative to the dataset root) the file is stored in;
    ``unpack`` (``"zip"``/``"tar"``) extracts it into ``extract_to`` (relative to the
    root). ``hash`` is ``"alg:hex"`` (a short sha256 hex is a prefix) or None.
    ``package_id`` marks a Cityscapes package.
    """

    filename: str
    base: str
    path: str = ""
    hash: str | None = None
    unpack: str | None = None
    dest: str = "downloads"
    extract_to: str = "."
    package_id: int | None = None

    def url(self, mirror: str | None = None) -> str:
        """The download URL, on ``mirror`` when one is given."""
        base = mirror or self.base
        return base.rstrip("/") + "/" + (self.path or self.filename)


def mirror_from_env(explicit: str | None = None) -> str | None:
    """``explicit`` if given, else ``$MPM_MIRROR`` (None when unset)."""
    return explicit or os.environ.get(MIRROR_ENV) or None


def cityscapes_site(explicit: str | None = None) -> str:
    """The Cityscapes site base URL (``$MPM_CITYSCAPES_URL`` overrides the official one)."""
    base = explicit or os.environ.get(CITYSCAPES_URL_ENV) or CITYSCAPES_SITE
    return base.rstrip("/") + "/"


DATASET_FILES: Mapping[str, tuple[RemoteFile, ...]] = MappingProxyType({
    "ade20k": (
        # sha1 as published with gluoncv/encoding's ADE20K download script
        RemoteFile(
            "ADEChallengeData2016.zip", "http://data.csail.mit.edu/places/ADEchallenge/",
            hash="sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7", unpack="zip",
        ),
    ),
    "cityscapes": (
        RemoteFile("gtFine_trainvaltest.zip", CITYSCAPES_SITE, package_id=1, unpack="zip",
                   extract_to="cityscapes"),
        RemoteFile("leftImg8bit_trainvaltest.zip", CITYSCAPES_SITE, package_id=3, unpack="zip",
                   extract_to="cityscapes"),
    ),
    "pascal_context": (
        # md5 as in torchvision's VOCSegmentation (year 2010)
        RemoteFile(
            "VOCtrainval_03-May-2010.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/",
            hash="md5:da459979d0c395079b5c75ee67908abb", unpack="tar",
        ),
        # sha1 as in gluoncv/encoding's Pascal Context download script
        RemoteFile(
            "trainval_merged.json", "https://codalabuser.blob.core.windows.net/public/",
            hash="sha1:169325d9f7e9047537fedca7b04de4dddf10b881", dest="VOCdevkit/VOC2010",
        ),
    ),
})


def dataset_files(name: str) -> tuple[RemoteFile, ...]:
    """The files ``mpm fetch dataset NAME`` downloads."""
    from mpm.data.datasets import canonical_name, get_spec

    key = canonical_name(name)
    if key == "synthetic":
        raise ConfigError("the synthetic set is generated, not downloaded: run `mpm synth --root DIR`")
    spec = get_spec(key)
    layout = spec.manifest_name
    if layout not in DATASET_FILES:
        raise ConfigError(f"no download sources for dataset {name!r}")
    return DATASET_FILES[layout]
