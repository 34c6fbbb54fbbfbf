"""Loopback HTTP servers for the data_download tests: plain files, a Hugging Face hub, Zenodo.

Each is a real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a daemon thread that
serves real bytes, honours ``Range`` requests, records every request (method, path, headers), and
can misbehave on purpose: cut a transfer halfway, answer 401/403/404, or serve the wrong bytes.
``FakeServer(host=non_loopback_address())`` listens on this machine's network address instead,
for the tests that check no token is sent over plain http to another machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None when it has none).

    Connecting a UDP socket sends nothing; it only picks the interface a packet would leave by.
    """
    for target in ("10.255.255.255", "198.51.100.1"):  # private / TEST-NET-2: nothing is sent
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((target, 9))
            address = probe.getsockname()[0]
        except OSError:
            continue
        finally:
            probe.close()
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


class FakeServer:
    """Serve ``files`` (URL path -> bytes) plus optional API ``routes``; record requests."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, tuple[int, dict[str, str]]] = {}  # path -> forced (code, headers)
        self.cut_once: set[str] = set()  # first GET of these paths stops halfway
        self.redirects: dict[str, str] = {}  # path -> Location
        self.routes: list[Callable[[BaseHTTPRequestHandler, str, str], bool]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        server_state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self, method: str) -> None:
                with server_state._lock:
                    server_state.requests.append((method, self.path, dict(self.headers.items())))
                path = urlsplit(self.path).path
                for route in server_state.routes:
                    if route(self, method, path):
                        return
                server_state.serve_path(self, method, path)

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_HEAD(self):  # noqa: N802
                self._handle("HEAD")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def seen(self, method: str | None = None, path_prefix: str = "") -> list[tuple[str, str, dict]]:
        """Recorded requests, filtered by method and path prefix."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r[0] == method)
                and urlsplit(r[1]).path.startswith(path_prefix)
            ]

    def serve_path(self, h: BaseHTTPRequestHandler, method: str, path: str) -> None:
        if path in self.status:
            code, headers = self.status[path]
            send_json(h, code, {"error": f"status {code}"}, headers)
            return
        if path in self.redirects:
            h.send_response(302)
            h.send_header("Location", self.redirects[path])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if path not in self.files:
            send_json(h, 404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        cut = False
        if method == "GET" and path in self.cut_once:
            self.cut_once.discard(path)
            cut = True
        serve_bytes(h, self.files[path], head=method == "HEAD", cut=cut)


def send_json(
    h: BaseHTTPRequestHandler, code: int, payload, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    h.send_response(code)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def serve_bytes(
    h: BaseHTTPRequestHandler,
    body: bytes,
    *,
    head: bool,
    cut: bool = False,
    headers: dict | None = None,
) -> None:
    """200 or 206 (``Range: bytes=N-``) with real bytes; ``cut`` sends half and closes."""
    start = 0
    match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", "") or "")
    if match:
        start = int(match.group(1))
        if start >= len(body):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(body)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    else:
        h.send_response(200)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Accept-Ranges", "bytes")
    h.send_header("Content-Length", str(len(body) - start))
    h.end_headers()
    if head:
        return
    payload = body[start:]
    if cut:
        h.wfile.write(payload[: len(payload) // 2])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    h.wfile.write(payload)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Answers like huggingface.co for one dataset repo: paths-info, tree, resolve (with Range).

    ``files`` maps repo paths to bytes. ``.nii.gz`` files are LFS (sha256 listed). Requests need
    ``Authorization: Bearer <token>``; otherwise 401 GatedRepo. ``mode="not_accepted"`` answers
    403 GatedRepo to everything (terms not accepted); ``resolve_status`` forces a status on the
    file downloads of some paths (listed by the API but refused or missing when fetched).
    """

    def __init__(
        self, server: FakeServer, repo_id: str, token: str, files: dict[str, bytes]
    ) -> None:
        self.server, self.repo_id, self.token, self.files = server, repo_id, token, files
        self.mode = "ok"
        self.resolve_status: dict[str, int] = {}
        server.routes.append(self.route)

    def _entry(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if path.endswith(".nii.gz"):
            entry["lfs"] = {
                "oid": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": 134,
            }
        return entry

    def _refuse(self, h) -> bool:
        if self.mode == "not_accepted":
            send_json(
                h,
                403,
                {
                    "error": f"Access to dataset {self.repo_id} is restricted and you are not in the authorized list."
                },
                {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"},
            )
            return True
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            send_json(
                h,
                401,
                {
                    "error": f"Access to dataset {self.repo_id} is restricted. You must be authenticated."
                },
                {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"},
            )
            return True
        return False

    def route(self, h, method: str, path: str) -> bool:
        api = f"/api/datasets/{self.repo_id}/"
        resolve = f"/datasets/{self.repo_id}/resolve/"
        if not (path.startswith(api) or path.startswith(resolve)):
            return False
        if self._refuse(h):
            return True
        if path.startswith(api + "paths-info/") and method == "POST":
            length = int(h.headers.get("Content-Length", "0"))
            form = parse_qs(h.rfile.read(length).decode())
            wanted = form.get("paths", [])
            send_json(h, 200, [self._entry(p) for p in wanted if p in self.files])
            return True
        if path.startswith(api + "tree/"):
            rest = path[len(api + "tree/") :]
            _, _, folder = rest.partition("/")
            folder = unquote(folder).strip("/")
            recursive = (
                parse_qs(urlsplit(h.path).query).get("recursive", ["false"])[0].lower() == "true"
            )
            send_json(h, *self._tree(folder, recursive))
            return True
        if path.startswith(resolve):
            _, _, repo_path = path[len(resolve) :].partition("/")
            repo_path = unquote(repo_path)
            if repo_path in self.resolve_status:
                send_json(h, self.resolve_status[repo_path], {"error": "refused"})
            elif repo_path not in self.files:
                send_json(h, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            else:
                data = self.files[repo_path]
                serve_bytes(
                    h,
                    data,
                    head=method == "HEAD",
                    headers={
                        "X-Repo-Commit": "0" * 40,
                        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    },
                )
            return True
        send_json(h, 404, {"error": "unknown API route"})
        return True

    def _tree(self, folder: str, recursive: bool) -> tuple[int, object]:
        prefix = folder + "/" if folder else ""
        below = [p for p in self.files if p.startswith(prefix)]
        if folder and not below:
            return 404, {"error": f"{folder} does not exist"}
        entries, folders = [], set()
        for p in sorted(below):
            parts = p[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                sub = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and sub not in folders:
                    folders.add(sub)
                    entries.append({"type": "directory", "path": sub, "oid": "1" * 40})
            if recursive or len(parts) == 1:
                entries.append(self._entry(p))
        return 200, entries


class FakeZenodo:
    """Answers like Zenodo's records API for one record: file list with md5, file content."""

    def __init__(
        self, server: FakeServer, record: str, files: dict[str, bytes], token: str | None
    ) -> None:
        self.server, self.record, self.files, self.token = server, record, files, token
        self.bad_md5: set[str] = set()
        server.routes.append(self.route)

    def route(self, h, method: str, path: str) -> bool:
        base = f"/api/records/{self.record}/files"
        if not path.startswith(base):
            return False
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            send_json(h, 403, {"message": "You do not have permission to access this record."})
            return True
        if path == base:
            entries = [
                {
                    "key": key,
                    "size": len(data),
                    "checksum": "md5:"
                    + (
                        hashlib.md5(b"x" + data).hexdigest()
                        if key in self.bad_md5
                        else hashlib.md5(data).hexdigest()
                    ),
                    "links": {"content": f"{self.server.url}{base}/{key}/content"},
                }
                for key, data in self.files.items()
            ]
            send_json(h, 200, {"entries": entries, "enabled": True})
            return True
        key = unquote(path[len(base) + 1 :]).removesuffix("/content")
        if key not in self.files:
            send_json(h, 404, {"message": "not found"})
        else:
            serve_bytes(h, self.files[key], head=method == "HEAD")
        return True
