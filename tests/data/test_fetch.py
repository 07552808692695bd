"""``mpm fetch`` of datasets and checkpoints against a local server (real layouts)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from _data_fixtures import (
    ade20k_members,
    cityscapes_members,
    pascal_context_json,
    tar_bytes,
    voc_members,
    zip_bytes,
)

from mpm.cli import main
from mpm.data import sources, zoo
from mpm.data.fetch import fetch_checkpoint, fetch_dataset

PASSWORD = "s3cr3t-Pa55word!"


def _patch_hashes(monkeypatch, name: str, blobs: dict[str, bytes]) -> None:
    """Point a dataset's known checksums at the test archives (the real ones are of the real files)."""
    files = tuple(dataclasses.replace(rf, hash=f"sha256:{hashlib.sha256(blobs[rf.filename]).hexdigest()}")
                  if rf.filename in blobs else rf for rf in sources.DATASET_FILES[name])
    monkeypatch.setattr(sources, "DATASET_FILES", dict(sources.DATASET_FILES, **{name: files}))


@pytest.fixture
def ade_zip():
    return zip_bytes(ade20k_members())


def test_fetch_ade20k_via_cli_then_nothing_on_rerun(server, tmp_path, monkeypatch, capsys, ade_zip):
    server.add("/ADEChallengeData2016.zip", ade_zip)
    _patch_hashes(monkeypatch, "ade20k", {"ADEChallengeData2016.zip": ade_zip})
    root = tmp_path / "ade"
    argv = ["fetch", "dataset", "ade20k", "--root", str(root), "--mirror", server.url("/")]
    assert main(argv) == 0
    assert (root / "downloads" / "ADEChallengeData2016.zip").read_bytes() == ade_zip
    assert (root / "ADEChallengeData2016/images/validation/ADE_val_00000002.jpg").is_file()
    assert (root / "ADEChallengeData2016/annotations/training/ADE_train_00000003.png").is_file()
    assert str(root / "downloads" / "ADEChallengeData2016.zip") in capsys.readouterr().out
    n = len(server.requests)
    (root / "ADEChallengeData2016/objectInfo150.txt").write_text("kept")  # no re-extraction either
    assert main(argv) == 0
    assert len(server.requests) == n
    assert (root / "ADEChallengeData2016/objectInfo150.txt").read_text() == "kept"


def test_fetch_ade20k_with_the_real_checksum_rejects_other_bytes(server, tmp_path, capsys, ade_zip):
    server.add("/ADEChallengeData2016.zip", ade_zip)
    code = main(["fetch", "dataset", "ade20k", "--root", str(tmp_path), "--mirror", server.url("/")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "expected sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7" in err
    assert f"arrived sha1:{hashlib.sha1(ade_zip).hexdigest()}" in err
    assert not list((tmp_path / "downloads").iterdir())


def test_no_verify_and_re_extraction_after_deletion(server, tmp_path, capsys, ade_zip):
    import shutil

    server.add("/ADEChallengeData2016.zip", ade_zip)
    argv = ["fetch", "dataset", "ade20k", "--root", str(tmp_path), "--mirror", server.url("/"), "--no-verify"]
    assert main(argv) == 0
    shutil.rmtree(tmp_path / "ADEChallengeData2016")
    n = len(server.requests)
    assert main(argv) == 0  # the archive is kept: extracted again, nothing downloaded
    assert len(server.requests) == n
    assert (tmp_path / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg").is_file()


def test_fetch_from_local_archive_makes_no_request(server, tmp_path, monkeypatch, ade_zip):
    local = tmp_path / "elsewhere" / "ADEChallengeData2016.zip"
    local.parent.mkdir()
    local.write_bytes(ade_zip)
    _patch_hashes(monkeypatch, "ade20k", {"ADEChallengeData2016.zip": ade_zip})
    fetch_dataset("ade20k", tmp_path / "root", from_paths=[local], mirror=server.url("/"))
    assert server.requests == []
    assert (tmp_path / "root/ADEChallengeData2016/images/training/ADE_train_00000001.jpg").is_file()
    bad = tmp_path / "bad" / "ADEChallengeData2016.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"junk")
    with pytest.raises(Exception, match="bad/ADEChallengeData2016.zip does not match the expected checksum"):
        fetch_dataset("ade20k", tmp_path / "other", from_paths=[bad.parent], mirror=server.url("/"))
    with pytest.raises(Exception, match="matches none of the expected files"):
        other = tmp_path / "root/ADEChallengeData2016/objectInfo150.txt"
        fetch_dataset("ade20k", tmp_path / "other", from_paths=[other])


def test_fetch_ade20k_interrupted_and_resumed(server, tmp_path, monkeypatch, ade_zip):
    server.add("/ADEChallengeData2016.zip", ade_zip)
    server.fault("/ADEChallengeData2016.zip", "drop:777")
    _patch_hashes(monkeypatch, "ade20k", {"ADEChallengeData2016.zip": ade_zip})
    fetch_dataset("ade20k", tmp_path, mirror=server.url("/"))
    assert [r.range for r in server.requests_for("/ADEChallengeData2016.zip")] == [None, "bytes=777-"]


def test_fetch_pascal_context(server, tmp_path, monkeypatch):
    tar = tar_bytes(voc_members())
    data, _ = pascal_context_json()
    js = json.dumps(data).encode()
    server.add("/VOCtrainval_03-May-2010.tar", tar)
    server.add("/trainval_merged.json", js)
    _patch_hashes(monkeypatch, "pascal_context", {"VOCtrainval_03-May-2010.tar": tar, "trainval_merged.json": js})
    monkeypatch.setenv("MPM_MIRROR", server.url("/"))
    assert main(["fetch", "dataset", "pascal-context", "--root", str(tmp_path)]) == 0
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    assert (voc / "trainval_merged.json").read_bytes() == js
    names = sorted(p.name for p in (voc / "JPEGImages").iterdir())
    assert names == ["2008_000002.jpg", "2008_000003.jpg", "2010_000001.jpg"]


def _cityscapes_server(server):
    gt, img = cityscapes_members()
    packages = {1: zip_bytes(gt), 3: zip_bytes(img)}
    server.cityscapes("alice", PASSWORD, packages)
    return packages


def test_fetch_cityscapes_logs_in_and_downloads(server, tmp_path, monkeypatch):
    packages = _cityscapes_server(server)
    server.fault("/file-handling/?packageID=3", "drop:500")
    monkeypatch.setenv("CITYSCAPES_USERNAME", "alice")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", PASSWORD)
    paths = fetch_dataset("cityscapes", tmp_path, mirror=server.url("/"))
    assert [p.read_bytes() for p in paths] == [packages[1], packages[3]]
    assert (tmp_path / "cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_polygons.json").is_file()
    assert (tmp_path / "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png").is_file()
    assert len(server.requests_for("/login/", "POST")) == 1  # one session for both packages
    assert server.requests_for("/file-handling/?packageID=3")[-1].range == "bytes=500-"
    n = len(server.requests)
    fetch_dataset("cityscapes", tmp_path, mirror=server.url("/"))
    assert len(server.requests) == n  # present: no login, no request


def test_cityscapes_credentials_from_netrc(server, tmp_path, monkeypatch):
    _cityscapes_server(server)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("MPM_CITYSCAPES_URL", server.url("/"))
    fetch_dataset("cityscapes", tmp_path / "root")
    assert (tmp_path / "root/cityscapes/gtFine/val").is_dir()


def test_cityscapes_failed_login_never_shows_the_password(server, tmp_path, monkeypatch, capsys, caplog):
    _cityscapes_server(server)
    monkeypatch.setenv("CITYSCAPES_USERNAME", "alice")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", PASSWORD + "-wrong")
    code = main(["fetch", "dataset", "cityscapes", "--root", str(tmp_path), "--mirror", server.url("/")])
    captured = capsys.readouterr()
    assert code == 2
    assert "login" in captured.err and "alice" in captured.err and "environment" in captured.err
    for text in (captured.err, captured.out, caplog.text):
        assert PASSWORD not in text
    assert not server.requests_for("/file-handling/?packageID=1")


def test_cityscapes_without_credentials_says_where_to_put_them(server, tmp_path, capsys):
    _cityscapes_server(server)
    code = main(["fetch", "dataset", "cityscapes", "--root", str(tmp_path), "--mirror", server.url("/")])
    err = capsys.readouterr().err
    assert code == 2 and "CITYSCAPES_USERNAME" in err and "netrc" in err and "--from" in err
    assert server.requests == []


def test_cityscapes_from_local_archives(server, tmp_path):
    gt, img = cityscapes_members()
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "gtFine_trainvaltest.zip").write_bytes(zip_bytes(gt))
    (folder / "leftImg8bit_trainvaltest.zip").write_bytes(zip_bytes(img))
    fetch_dataset("cityscapes", tmp_path / "root", from_paths=[folder], mirror=server.url("/"))
    assert server.requests == []
    assert (tmp_path / "root/cityscapes/leftImg8bit/train/bochum").is_dir()


def test_fetch_segmenter_checkpoint_both_files(server, tmp_path, capsys):
    entry = zoo.get_entry("seg_tiny_mask_ade20k")
    for rf in entry.files:
        server.add("/" + rf.path, rf.filename.encode() * 100)
    assert main(["fetch", "checkpoint", entry.name, "--dest", str(tmp_path), "--mirror", server.url("/")]) == 0
    weights = zoo.checkpoint_path(tmp_path, entry.name)
    assert capsys.readouterr().out.strip() == str(weights)
    assert weights == tmp_path / "seg_tiny_mask_ade20k" / "checkpoint.pth" and weights.is_file()
    assert zoo.variant_path(tmp_path, entry.name).read_bytes() == b"variant.yml" * 100
    paths = {r.path for r in server.requests}
    assert paths == {"/ade20k/seg_tiny_mask/checkpoint.pth", "/ade20k/seg_tiny_mask/variant.yml"}


def test_fetch_mmseg_checkpoint_checks_the_sha256_prefix(server, tmp_path, capsys):
    entry = zoo.get_entry("mmseg_vit-t_mask_ade20k")
    blob = b"not the real weights"
    server.add("/" + entry.files[0].path, blob)
    code = main(["fetch", "checkpoint", entry.name, "--dest", str(tmp_path), "--mirror", server.url("/")])
    err = capsys.readouterr().err
    assert code == 2 and "expected sha256:ffcf7509…" in err and hashlib.sha256(blob).hexdigest() in err
    assert not list((tmp_path / entry.name).iterdir())


def test_fetch_checkpoint_from_local_file(server, tmp_path):
    local = tmp_path / "my_download.pth"
    local.write_bytes(b"weights")
    (tmp_path / "variant.yml").write_text("net_kwargs: {}\n")
    path = fetch_checkpoint("seg_large_mask_cityscapes", tmp_path / "ckpt",
                            from_paths=[local, tmp_path / "variant.yml"], mirror=server.url("/"))
    assert path.read_bytes() == b"weights" and server.requests == []
    with pytest.raises(Exception, match="does not match the expected checksum"):
        fetch_checkpoint("mmseg_vit-b_mask_ade20k", tmp_path / "ckpt", from_paths=[local])


def test_fetch_list_and_synthetic_is_not_downloadable(capsys):
    assert main(["fetch", "list"]) == 0
    out = capsys.readouterr().out
    assert "seg_large_mask_640_ade20k" in out and "pascal_context" in out
    assert main(["fetch", "dataset", "synthetic", "--root", "x"]) == 2
    assert "mpm synth" in capsys.readouterr().err
