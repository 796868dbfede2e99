"""The IMI downloader against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from interpscore.data import download
from interpscore.cli import main
from interpscore.data.download import DownloadError, download_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    cut_after = None  # bytes to send before dropping the connection (once)
    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        start = 0
        header = self.headers.get("Range")
        Handler.ranges.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Handler.cut_after is not None:
            body, Handler.cut_after = body[:Handler.cut_after], None
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.cut_after, Handler.ranges = None, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_full_download(server, tmp_path):
    path = download_file(f"{server}/f.zip", tmp_path / "f.zip", MD5, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.zip.part").exists()


def test_resume_after_a_cut(server, tmp_path):
    Handler.cut_after = 300_000
    with pytest.raises(DownloadError, match="resume"):
        download_file(f"{server}/f.zip", tmp_path / "f.zip", MD5, progress=False)
    assert not (tmp_path / "f.zip").exists()
    assert (tmp_path / "f.zip.part").stat().st_size == 300_000
    download_file(f"{server}/f.zip", tmp_path / "f.zip", MD5, progress=False)
    assert Handler.ranges[-1] == "bytes=300000-"
    assert (tmp_path / "f.zip").read_bytes() == PAYLOAD


def test_md5_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_file(f"{server}/f.zip", tmp_path / "f.zip", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host(tmp_path):
    with pytest.raises(DownloadError, match="unreachable"):
        download_file("http://127.0.0.1:9/f.zip", tmp_path / "f.zip", MD5, progress=False)
    assert not (tmp_path / "f.zip").exists()


def test_cli_downloads_the_release_files(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "IMI_FILES", {"human_responses.zip": MD5})
    assert main(["download-imi", "--out", str(tmp_path), "--base-url", server]) == 0
    assert (tmp_path / "human_responses.zip").read_bytes() == PAYLOAD
    assert main(["download-imi", "--out", str(tmp_path), "--files", "nope.zip"]) == 2
    assert "unknown IMI file" in capsys.readouterr().err
