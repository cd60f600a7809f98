"""A Label Studio-compatible file server: what ingest fetches from Label Studio, served from a folder.

Used by `flywheel demo --project` and by tests where a real Label Studio is not installed. It plays
the parts of Label Studio 1.23 that ingest talks to, as /work/shared/LABEL-STUDIO-FACTS.md records
them (checked against the real tool):

* `GET /data/upload/<project>/<file>` and `GET /data/local-files/?d=<path>`: the file, 200 with its
  media type; 401 without a valid credential; 404 for anything else (never a path outside the root);
* credentials: the legacy `Authorization: Token <api token>` (when `legacy_tokens`), or the JWT
  flow — `POST /api/token/refresh/` with `{"refresh": …}` gives `{"access": …}`, valid
  `access_ttl_s` (five minutes in Label Studio), sent as `Authorization: Bearer <access>`;
* `GET /api/projects/<id>/export?exportType=JSON`: the project's tasks with their annotations.

It is not Label Studio: no UI, no webhooks of its own (the demo posts Label Studio's webhook
payloads itself), one user.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class LabelStudioFiles:
    """Files under `root/upload/<project>/…` and `root/local/…`; exports by project id."""

    root: Path
    api_token: str = field(default_factory=lambda: secrets.token_hex(20))
    refresh_token: str = field(default_factory=lambda: secrets.token_hex(24))
    legacy_tokens: bool = True
    access_ttl_s: float = 300.0
    exports: dict[int, list[dict]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status), for tests
    _access: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def upload(self, project: int, name: str, data: bytes) -> str:
        """Store a file as Label Studio's import does; returns its task URL (`/data/upload/<project>/<hex>-<name>`)."""
        folder = self.root / "upload" / str(project)
        folder.mkdir(parents=True, exist_ok=True)
        stored = f"{secrets.token_hex(4)}-{Path(name).name}"
        (folder / stored).write_bytes(data)
        return f"/data/upload/{project}/{stored}"

    def authorised(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme == "Token" and self.legacy_tokens:
            return secrets.compare_digest(value.strip(), self.api_token)
        if scheme == "Bearer":
            with self._lock:
                until = self._access.get(value.strip())
            return until is not None and time.monotonic() < until
        return False

    def new_access(self) -> str:
        token = secrets.token_hex(20)
        with self._lock:
            self._access[token] = time.monotonic() + self.access_ttl_s
        return token

    def expire_access_tokens(self) -> None:
        """As if five minutes passed: every access token is refused until refreshed."""
        with self._lock:
            self._access.clear()

    def file(self, url_path: str, query: str) -> Path | None:
        if url_path.startswith("/data/upload/"):
            rel = unquote(url_path.removeprefix("/data/upload/"))
            base = self.root / "upload"
        elif url_path == "/data/local-files/" or url_path == "/data/local-files":
            rel = parse_qs(query).get("d", [""])[0]
            base = self.root / "local"
        else:
            return None
        target = (base / rel).resolve()
        return target if target.is_file() and target.is_relative_to(base.resolve()) else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.server.files.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        files = self.server.files
        url = urlsplit(self.path)
        if not files.authorised(self.headers.get("Authorization")):
            self._send(401, b'{"detail":"Authentication credentials were not provided."}')
            return
        if url.path.startswith("/api/projects/") and url.path.endswith("/export"):
            try:
                project = int(url.path.split("/")[3])
            except ValueError:
                self._send(404, b'{"detail":"Not found."}')
                return
            self._send(200, json.dumps(files.exports.get(project, [])).encode())
            return
        path = files.file(url.path, url.query)
        if path is None:
            self._send(404, b'{"detail":"Not found."}')
            return
        self._send(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    def do_POST(self) -> None:
        files = self.server.files
        if self.path != "/api/token/refresh/":
            self._send(404, b'{"detail":"Not found."}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            refresh = json.loads(self.rfile.read(min(length, 65536)) or b"{}").get("refresh")
        except ValueError:
            refresh = None
        if refresh != files.refresh_token:
            self._send(401, b'{"detail":"Token is invalid or expired","code":"token_not_valid"}')
            return
        self._send(200, json.dumps({"access": files.new_access()}).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: LabelStudioFiles, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.files = files


class LabelStudioServer:
    """Serve `files` on 127.0.0.1 (a free port unless given) in a background thread."""

    def __init__(self, files: LabelStudioFiles, port: int = 0) -> None:
        self.files = files
        self._server = _Server(files, port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="label-studio", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LabelStudioServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> LabelStudioServer:
        return self.__enter__()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
