"""The one URI reader: limits on type, size and time (issue 16, group 3 and 4)."""

from __future__ import annotations

import http.server
import os
import threading
import time

import pytest

from clipbranches_widget.engine.store import uris
from clipbranches_widget.engine.store.uris import local_path, read_bytes


class _Slow(http.server.BaseHTTPRequestHandler):
    """Serves an endless body, 1 KB every 0.5 s: never done, never silent."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if self.path == "/huge":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_paths_and_file_urls(tmp_path):
    f = tmp_path / "a b.jpg"
    f.write_bytes(b"abc")
    assert read_bytes(str(f)) == read_bytes(f.as_uri()) == b"abc"
    assert read_bytes("file://localhost" + str(f)) == b"abc"
    with pytest.raises(FileNotFoundError, match="no file at"):
        read_bytes(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="expected a local path or file:// URL"):
        local_path("ftp://example.com/a.jpg")


def test_file_url_of_another_host_is_refused():
    with pytest.raises(ValueError, match="expected a file:// URL on this machine"):
        read_bytes("file://otherhost/etc/passwd")


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_an_image_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="is not a regular file"):
        read_bytes(str(fifo))
    assert time.monotonic() - t0 < 2


@pytest.mark.timeout(20)
def test_an_endless_device_file_is_refused():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(OSError, match="is not a regular file"):
        read_bytes("/dev/zero")
    with pytest.raises(OSError, match="is not a regular file"):
        read_bytes("file:///dev/zero")


def test_files_over_the_size_cap_are_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:  # sparse: no disk used
        fh.truncate(uris.MAX_BYTES + 1)
    with pytest.raises(OSError, match="larger than the 67,108,864-byte limit"):
        read_bytes(str(big))
    small = tmp_path / "s.jpg"
    small.write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="larger than the 10-byte limit"):
        read_bytes(str(small), max_bytes=10)
    monkeypatch.setattr(uris, "MAX_BYTES", 50)  # the module default is read at call time
    with pytest.raises(OSError, match="larger than the 50-byte limit"):
        read_bytes(str(small))


@pytest.mark.timeout(30)
def test_a_trickling_server_hits_the_overall_deadline(slow_server, monkeypatch):
    t0 = time.monotonic()
    with pytest.raises(OSError, match=r"could not fetch .*not complete after 1.5 s"):
        read_bytes(slow_server + "/slow.jpg", timeout=1.5)
    assert time.monotonic() - t0 < 4  # each recv returns, so only the deadline stops it
    monkeypatch.setattr(uris, "URL_TIMEOUT_S", 1.0)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="not complete after 1 s"):
        read_bytes(slow_server + "/slow.jpg")
    assert time.monotonic() - t0 < 3


@pytest.mark.timeout(30)
def test_a_server_announcing_a_huge_body_is_refused_at_once(slow_server):
    t0 = time.monotonic()
    with pytest.raises(OSError, match="larger than the"):
        read_bytes(slow_server + "/huge")
    assert time.monotonic() - t0 < 2


@pytest.mark.timeout(30)
def test_an_endless_body_stops_at_the_size_cap(slow_server):
    with pytest.raises(OSError, match="larger than the 2,000-byte limit"):
        read_bytes(slow_server + "/slow.jpg", max_bytes=2000, timeout=10)
