"""colorkit.fetch against a local HTTP server on 127.0.0.1: success, checksum mismatch,
interruption and resume, offline; and DATA taking the fetched dataset's name."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from colorkit import data, fetch
from colorkit.fetch import FetchError, RemoteDataset


def fixture_archive() -> bytes:
    """A .tgz holding mini/train/*.png and mini/val/*.png, as Imagenette is laid out."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for split, count in (("train", 6), ("val", 2)):
            for i in range(count):
                image = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(image, format="PNG")
                info = tarfile.TarInfo(f"mini/{split}/img{i}.png")
                info.size = len(image.getvalue())
                archive.addfile(info, io.BytesIO(image.getvalue()))
    return buffer.getvalue()


class Server:
    """Serves one archive with Range support; `cut_after` bytes then a dropped connection, once."""

    def __init__(self, payload: bytes):
        self.payload, self.cut_after, self.requests = payload, None, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append(self.headers.get("Range"))
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                body = owner.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_after is not None:
                    self.wfile.write(body[:owner.cut_after])
                    owner.cut_after = None
                    self.wfile.flush()
                    self.connection.shutdown(2)              # the connection breaks mid-download
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mini.tgz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = Server(fixture_archive())
    yield served
    served.close()


def remote(server, **checksum) -> RemoteDataset:
    checksum = checksum or {"sha256": hashlib.sha256(server.payload).hexdigest()}
    return RemoteDataset("mini", server.url, "mini", **checksum)


def test_a_fetch_downloads_checks_extracts_and_is_then_a_no_op(server, tmp_path):
    said = []
    folder = fetch.fetch(remote(server), tmp_path, say=said.append)
    assert folder == tmp_path / "mini" and sorted(p.name for p in (folder / "train").iterdir()) == [f"img{i}.png" for i in range(6)]
    assert not list((tmp_path / ".downloads").iterdir()) and not list(tmp_path.glob(".extract-*"))
    assert fetch.fetch(remote(server), tmp_path, say=said.append) == folder and len(server.requests) == 1
    assert "already" in said[-1]
    md5 = hashlib.md5(server.payload).hexdigest()
    assert fetch.fetch(RemoteDataset("mini2", server.url, "mini", md5=md5), tmp_path, say=said.append).is_dir()


def test_a_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(FetchError, match="sha256 .* does not match the expected 0000"):
        fetch.fetch(remote(server, sha256="0" * 64), tmp_path, say=lambda line: None)
    assert not (tmp_path / "mini").exists() and not list((tmp_path / ".downloads").iterdir())


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    server.cut_after = len(server.payload) // 3
    with pytest.raises(FetchError, match="broke off after .* run the same fetch again to resume"):
        fetch.fetch(remote(server), tmp_path, say=lambda line: None)
    partial = tmp_path / ".downloads" / "mini.tgz.part"
    assert partial.stat().st_size == len(server.payload) // 3 and not (tmp_path / "mini").exists()
    folder = fetch.fetch(remote(server), tmp_path, say=lambda line: None)
    assert server.requests == [None, f"bytes={len(server.payload) // 3}-"]      # the second asked for the rest only
    assert len(list((folder / "val").iterdir())) == 2 and not partial.exists()


def test_offline_is_one_clear_line(tmp_path):
    unreachable = RemoteDataset("mini", "http://127.0.0.1:9/mini.tgz", "mini", sha256="0" * 64)   # port 9: nothing listens
    with pytest.raises(FetchError, match=r"cannot reach 127.0.0.1:9 .*are you offline\? nothing was written"):
        fetch.fetch(unreachable, tmp_path, say=lambda line: None, timeout=5)


def test_data_takes_the_fetched_datasets_name(server, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.DATASETS, "mini", remote(server))
    monkeypatch.setattr(fetch, "dataset_dir", lambda name, data_dir=None: tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m colorkit data fetch mini"):
        data.open_dataset("mini", split="train", size=32)
    fetch.fetch("mini", say=lambda line: None)
    assert len(data.open_dataset("mini", split="train", size=32)) == 6
    assert len(data.open_dataset("mini", split="val", size=32)) == 2
    with pytest.raises(ValueError, match="unknown dataset 'nope'; the datasets are: imagenette, flowers, cub"):
        fetch.fetch("nope")
