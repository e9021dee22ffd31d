"""What `cbirq serve` trusts (docs/security.md, "The web server"): the Host a request names, the
token, the files behind indexed paths, request bodies, and its thumbnail cache. A real server
process where sockets, proxies and memory are the point; Starlette's test client otherwise."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cbirq import settings
from cbirq.cli.serve import build_app
from cbirq.web import library
from tests.conftest import make_library, make_photo, run_cli
from tests.web_server import WebServer

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Site:
    root: Path
    env: dict
    server: WebServer

    def photo(self, i: int) -> Path:
        return self.root / "lib" / f"set{i % 3}" / f"img{i:03d}.png"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    env = {"CBIRQ_HOME": str(root / "home"), "CBIRQ_ENGINE": "torch", "CBIRQ_MAX_FILE_MB": "1"}
    make_library(root / "lib", 6)
    done = run_cli("index", str(root / "lib"), "--index", "web", env=env)
    assert done.returncode == 0, done.stderr
    limits = {
        "CBIRQ_SERVE_TOKEN": TOKEN,
        "CBIRQ_SERVE_BODY_TIMEOUT": "3",
        "CBIRQ_SERVE_UPLOADS": "2",
        "CBIRQ_SERVE_MAX_UPLOAD_MB": "2",
    }
    server = WebServer({**env, **limits}, root / "serve.log", "web")
    yield Site(root, env, server)
    server.stop()


def app_client(site: Site, host: str = "127.0.0.1", allow=(), **env) -> TestClient:
    config = settings.load({**os.environ, **site.env, **env})
    return TestClient(build_app(config, "web", host, allow), base_url="http://localhost")


def ask(site: Site, method: str, url: str, body: bytes | None = None, **headers) -> tuple:
    """(status, headers, JSON or bytes) from the real server, with exactly these headers."""
    connection = http.client.HTTPConnection("127.0.0.1", site.server.port, timeout=30)
    headers.setdefault("Host", f"localhost:{site.server.port}")
    connection.request(method, url, body, {**BEARER, **headers})
    answer = connection.getresponse()
    data = answer.read()
    connection.close()
    is_json = answer.headers.get("content-type") == "application/json"
    return answer.status, answer.headers, json.loads(data) if is_json else data


@pytest.fixture
def restored(site):
    """Indexed photos a test may replace, put back afterwards."""
    saved: dict[Path, bytes] = {}
    yield lambda path: saved.setdefault(path, path.read_bytes())
    for path, data in saved.items():
        path.unlink(missing_ok=True)
        path.write_bytes(data)


# Paths: what an indexed path points to now


def test_a_photo_replaced_by_a_symlink_is_not_followed_out_of_the_library(site, restored, tmp_path):
    photo, neighbour = site.photo(0), site.photo(1)
    restored(photo)
    secret = tmp_path / "private.txt"
    secret.write_text("my bank password")
    with app_client(site) as client:
        for target in (secret, Path(site.env["CBIRQ_HOME"]) / "store.sqlite3"):
            photo.unlink()
            photo.symlink_to(target)
            for kind in ("image", "thumb"):
                answer = client.get(f"/api/{kind}", params={"path": str(photo)})
                assert answer.status_code == 404, (kind, target)
                assert "outside the folders it was indexed from" in answer.json()["error"]
        photo.unlink()
        photo.symlink_to(neighbour)  # a link that stays in the library is still shown
        answer = client.get("/api/image", params={"path": str(photo)})
        assert answer.status_code == 200 and answer.content == neighbour.read_bytes()
        assert answer.headers["x-content-type-options"] == "nosniff"


def peak_memory(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        * 1024
    )


def test_more_like_this_never_reads_a_file_over_the_cap(site, restored):
    photo = site.photo(2)
    restored(photo)
    with photo.open("wb") as big:  # sparse: 256 MB to read, nothing on disk
        big.truncate(256 * 2**20)
    pid = site.server.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak restarts from the present
    before = peak_memory(pid)
    form = f"path={photo}".encode()
    status, _, answer = ask(
        site, "POST", "/api/query", form, **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert peak_memory(pid) - before < 64 * 2**20  # the server's CBIRQ_MAX_FILE_MB is 1
    assert status == 404 and "file too large" in answer["error"], answer


# Hosts: DNS rebinding


def test_a_request_for_another_host_is_refused(site):
    port = site.server.port
    for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "localhost.evil"):
        for url in ("/api/indexes", f"/api/image?path={site.photo(3)}"):
            status, _, answer = ask(site, "GET", url, Host=host)
            assert status == 400 and "does not answer for Host" in answer["error"], host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LocalHost."):
        assert ask(site, "GET", "/api/indexes", Host=host)[0] == 200, host


def test_names_given_by_option_or_setting_are_answered(site):
    allowed = {"CBIRQ_SERVE_ALLOWED_HOSTS": "*.example.org, photos.lan"}
    with app_client(site, "0.0.0.0", ("nas.home",), **allowed) as client:
        for host in (
            "photos.lan",
            "a.b.example.org:8000",
            "nas.home",
            socket.gethostname(),
            "192.0.2.7:8000",
            "[2001:db8::1]:80",
        ):
            assert client.get("/api/indexes", headers={"Host": host}).status_code == 200, host
        for host in ("example.org", "photos.lan.evil", "evil.test"):
            assert client.get("/api/indexes", headers={"Host": host}).status_code == 400, host


# Tokens


def test_token_edge_cases_are_401_and_set_no_cookie(site):
    with app_client(site, CBIRQ_SERVE_TOKEN=TOKEN) as client:
        for strange in (
            {"params": {"token": "s3crét"}},
            {"headers": {"Authorization": "Bearer s3crét".encode()}},
            {"headers": {"Cookie": "cbirq_token=s3crét".encode()}},
        ):
            assert client.get("/api/indexes", **strange).status_code == 401, strange
        injected = {"token": "x; Domain=example.com"}
        answer = client.get("/api/indexes", params=injected, headers=BEARER)
        assert answer.status_code == 200 and "set-cookie" not in answer.headers
        cookie = client.get("/", params={"token": TOKEN}).headers["set-cookie"]
        assert set(cookie.split("; ")) == {
            "cbirq_token=s3cret",
            "Path=/",
            "HttpOnly",
            "SameSite=Strict",
        }


def test_the_cookie_is_secure_behind_an_https_proxy(site):
    # uvicorn takes the scheme from X-Forwarded-Proto when the proxy is trusted (127.0.0.1 is)
    proxied = ask(site, "GET", f"/?token={TOKEN}", **{"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied[1]["set-cookie"].split("; ")
    plain = ask(site, "GET", f"/?token={TOKEN}")[1]["set-cookie"]
    assert "Secure" not in plain.split("; ")


# Bodies: stalled and dropped uploads


def start_upload(site: Site, declared: int, sent: int) -> socket.socket:
    """A connection that declares a body of `declared` bytes, sends `sent` of them and stops."""
    sock = socket.create_connection(("127.0.0.1", site.server.port), timeout=15)
    head = (
        f"POST /api/query HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\0" * sent)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while part := sock.recv(65536):
        answer += part
    sock.close()
    return answer


def test_stalled_uploads_are_cut_off_and_only_two_are_held(site):
    stalled = [start_upload(site, 2_000_000, 1_500_000) for _ in range(2)]
    time.sleep(1)  # both hold their slot (CBIRQ_SERVE_UPLOADS=2)
    began = time.monotonic()
    third = until_closed(start_upload(site, 2_000_000, 1000))
    assert third.startswith(b"HTTP/1.1 503") and b"CBIRQ_SERVE_UPLOADS=2" in third
    for sock in stalled:  # CBIRQ_SERVE_BODY_TIMEOUT=3: answered and closed
        answer = until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"within 3 s" in answer
    assert time.monotonic() - began < 6
    image = io.BytesIO()
    make_photo(4).save(image, "PNG")
    body = b"--b\r\nContent-Disposition: form-data; name=file; filename=q.png\r\n\r\n"
    body += image.getvalue() + b"\r\n--b--\r\n"
    form = {"Content-Type": "multipart/form-data; boundary=b"}
    status, _, answer = ask(site, "POST", "/api/query", body, **form)
    assert status == 200 and answer["results"][0]["path"] == str(site.photo(4))


def test_a_client_that_goes_away_is_one_log_line(site):
    log = site.server.log
    start_upload(site, 2_000_000, 100_000).close()
    deadline = time.monotonic() + 10
    while "went away" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in log.read_text().splitlines() if "went away" in line]
    assert lines == ["cbirq serve: 127.0.0.1 went away during its upload to /api/query"]
    assert "Traceback" not in log.read_text()


# The thumbnail cache


def test_thumbnails_come_in_a_few_sizes(site):
    thumbs = Path(site.env["CBIRQ_HOME"]) / "cache" / "thumbs"
    before = set(thumbs.glob("*.jpg"))
    with app_client(site) as client:
        for size in random.Random(1).sample(range(32, 1025), 40):
            answer = client.get("/api/thumb", params={"path": str(site.photo(5)), "size": size})
            assert answer.status_code == 200
        for size in (0, 1025):
            assert client.get(
                "/api/thumb", params={"path": str(site.photo(5)), "size": size}
            ).is_error
    assert len(set(thumbs.glob("*.jpg")) - before) <= 5  # 64, 128, 256, 512, 1024


def test_the_thumbnail_cache_keeps_under_its_cap(tmp_path):
    cache = library.ThumbCache(tmp_path / "thumbs", 20_000)
    for seed in range(30):
        image = io.BytesIO()
        make_photo(seed, (300, 200)).save(image, "PNG")
        made = cache.thumbnail(image.getvalue(), 256)
        used = sum(f.stat().st_size for f in (tmp_path / "thumbs").iterdir())
        assert 0 < used <= 20_000
    assert cache.thumbnail(image.getvalue(), 256) == made  # the newest is kept


# Start-up


def test_serve_on_a_busy_port_is_one_error_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", "--port", str(port), timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"Error: cannot listen on 127.0.0.1 port {port}: Address already in use\n"
