"""Resumable, verified downloads against a real local HTTP server."""

from __future__ import annotations

import hashlib
import os

import pooch
import pytest
from _data_http import closed_port_url

from mpm.data.checksums import parse_hash
from mpm.data.download import ResumableDownloader, fetch_file, part_path, place_file
from mpm.errors import ConfigError, DownloadError

PAYLOAD = os.urandom(300_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_downloads_and_verifies(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    target, downloaded = fetch_file(url, tmp_path / "a.bin", parse_hash(f"sha256:{SHA256}"))
    assert downloaded and target.read_bytes() == PAYLOAD
    assert not part_path(target).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary left behind


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.fault("/a.bin", "drop:100000", "drop:150000")
    target, _ = fetch_file(url, tmp_path / "a.bin", parse_hash(f"sha256:{SHA256}"), retries=3)
    assert target.read_bytes() == PAYLOAD
    ranges = [r.range for r in server.requests_for("/a.bin")]
    assert ranges == [None, "bytes=100000-", "bytes=250000-"]


def test_resume_across_runs_keeps_the_part_file(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.fault("/a.bin", "drop:120000")
    with pytest.raises(DownloadError, match="after 1 attempt"):
        fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256), retries=0)
    part = part_path(tmp_path / "a.bin")
    assert part.stat().st_size == 120000 and not (tmp_path / "a.bin").exists()
    fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256), retries=0)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests_for("/a.bin")[-1].range == "bytes=120000-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.fault("/a.bin", "drop:5000", "norange")
    target, _ = fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256), retries=2)
    assert target.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_partial_and_names_both_hashes(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.fault("/a.bin", "wrong")
    wrong = hashlib.sha256(bytes((b + 1) % 256 for b in PAYLOAD)).hexdigest()
    with pytest.raises(DownloadError) as err:
        fetch_file(url, tmp_path / "a.bin", parse_hash(f"sha256:{SHA256}"))
    message = str(err.value)
    assert SHA256 in message and wrong in message and url in message
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_is_verified(server, tmp_path):
    url = server.add("/ckpt_20220105_151706-%s.pth" % SHA256[:8], PAYLOAD)
    fetch_file(url, tmp_path / "ok.pth", parse_hash(f"sha256:{SHA256[:8]}"))
    bad = "0" * 8 if not SHA256.startswith("0" * 8) else "f" * 8
    with pytest.raises(DownloadError, match=f"expected sha256:{bad}…, arrived sha256:{SHA256}"):
        fetch_file(url, tmp_path / "bad.pth", parse_hash(f"sha256:{bad}"))
    assert not (tmp_path / "bad.pth.part").exists()


def test_404_is_final_and_explains_manual_placement(server, tmp_path):
    url = server.url("/missing.zip")
    with pytest.raises(DownloadError) as err:
        fetch_file(url, tmp_path / "missing.zip", retries=3)
    message = str(err.value)
    assert "HTTP 404" in message and url in message and "--from" in message
    assert len(server.requests_for("/missing.zip")) == 1  # a 404 is not retried


def test_500_retries_a_bounded_number_of_times(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.always["/a.bin"] = 500
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\): HTTP 500"):
        fetch_file(url, tmp_path / "a.bin", retries=2)
    assert len(server.requests_for("/a.bin")) == 3


def test_transient_500_then_success(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    server.fault("/a.bin", 503, 500)
    target, _ = fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256), retries=2)
    assert target.read_bytes() == PAYLOAD


def test_present_file_makes_no_request(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256))
    before = len(server.requests)
    _, downloaded = fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256))
    assert not downloaded and len(server.requests) == before


def test_present_file_with_wrong_content_is_replaced(server, tmp_path):
    url = server.add("/a.bin", PAYLOAD)
    (tmp_path / "a.bin").write_bytes(b"stale")
    _, downloaded = fetch_file(url, tmp_path / "a.bin", parse_hash(SHA256))
    assert downloaded and (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_no_network_names_url_and_manual_route(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as err:
        fetch_file(url, tmp_path / "nothing.zip", retries=1)
    message = str(err.value)
    assert url in message and "after 2 attempt(s)" in message
    assert "--from PATH" in message and str(tmp_path / "nothing.zip") in message


def test_downloader_works_through_pooch_retrieve(server, tmp_path):
    url = server.add("/b.bin", PAYLOAD)
    server.fault("/b.bin", "drop:1000")
    target = tmp_path / "b.bin"
    path = pooch.retrieve(url, known_hash=f"sha256:{SHA256}", fname="b.bin", path=tmp_path,
                          downloader=ResumableDownloader(target, parse_hash(SHA256)))
    assert open(path, "rb").read() == PAYLOAD
    assert ResumableDownloader(target)(url, None, None, check_only=True) is True


def test_place_file_verifies_and_links(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = place_file(src, tmp_path / "dest" / "a.bin", parse_hash(SHA256))
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=f"expected sha256:{'0' * 64}, found sha256:{SHA256}"):
        place_file(src, tmp_path / "dest" / "b.bin", parse_hash("0" * 64))
    with pytest.raises(DownloadError, match="does not exist"):
        place_file(tmp_path / "nope", tmp_path / "x")


def test_parse_hash():
    assert parse_hash(None) is None and parse_hash("none") is None
    assert parse_hash("MD5:ABC").alg == "md5" and parse_hash("abc").alg == "sha256"
    assert parse_hash("sha256:ffcf7509").is_prefix and not parse_hash(f"sha256:{SHA256}").is_prefix
    with pytest.raises(ConfigError):
        parse_hash("crc32:00")
    with pytest.raises(ConfigError):
        parse_hash("sha1:xyz")


# --------------------------------------------------------------------------- credentials in URLs

SECRET = "s3cret-in-the-url"


def test_redact_url():
    from mpm.io import redact_url

    assert redact_url(f"http://user:{SECRET}@127.0.0.1:8000/a.zip") == "http://user:***@127.0.0.1:8000/a.zip"
    assert redact_url(f"https://{SECRET}@host/x") == "https://***@host/x"  # a lone userinfo is a token
    assert redact_url(f"see http://u:p@ss{SECRET}@h/x?Token={SECRET}&n=1 and "
                      f"/y?access_token={SECRET}#f") == "see http://u:***@h/x?Token=***&n=1 and /y?access_token=***#f"
    assert redact_url(f"http://h/?key={SECRET};sig={SECRET}") == "http://h/?key=***;sig=***"
    for clean in ("http://127.0.0.1:8000/file-handling/?packageID=3", "no URL here: a=b", "http://[::1]:80/x"):
        assert redact_url(clean) == clean


def _no_secret_anywhere(captured, caplog, root) -> None:
    for text in (captured.err, captured.out, caplog.text):
        assert SECRET not in text
    for path in root.rglob("*"):  # stamps, partial files, records: nothing stores the URL's password
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("fault", [404, 500, "refused"])
def test_failed_download_from_a_mirror_with_credentials_never_shows_them(server, tmp_path, capsys, caplog, fault):
    from mpm.cli import main

    caplog.set_level("DEBUG")
    if fault == "refused":
        port = closed_port_url().split(":")[2].split("/")[0]
        mirror = f"http://user:{SECRET}@127.0.0.1:{port}/base/?token={SECRET}"
    else:
        server.add("/base/ADEChallengeData2016.zip", b"zip")
        server.always["/base/ADEChallengeData2016.zip"] = fault
        mirror = f"http://user:{SECRET}@127.0.0.1:{server.port}/base/"
    root = tmp_path / "ade"
    code = main(["fetch", "dataset", "ade20k", "--root", str(root), "--mirror", mirror, "--retries", "1"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert "user:***@127.0.0.1" in captured.err  # the URL is still named, its password is not
    _no_secret_anywhere(captured, caplog, root)
    if fault == 500:  # the retry was logged (with the URL, redacted)
        assert "retrying" in caplog.text and "user:***@" in caplog.text
    if fault != "refused":
        assert server.requests_for("/base/ADEChallengeData2016.zip")  # the request was made, with the credentials
