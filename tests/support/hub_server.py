"""A Hugging Face Hub on 127.0.0.1 for tests: the resolve endpoint that `hf_hub_download` uses, answered
the way huggingface.co answers it, so `encoder.pretrained: hub` is tested without the internet."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee0123456789abcdef0123456789abcdef01"


class LocalHub:
    """Files of model repos served at `/{repo_id}/resolve/{revision}/{filename}`, as huggingface.co does:
    200 with X-Repo-Commit, ETag and Content-Length (HEAD: headers only), 404 + `EntryNotFound` for a file
    the repo lacks, 401 + `RepoNotFound` for an unknown repo."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo_id: str, filename: str, data: bytes) -> None:
        self.files[(repo_id, filename)] = data

    def add_timm(self, backbone: str, data: bytes, filename: str = "model.safetensors") -> str:
        """Serve `data` as the weights timm's pretrained config names for `backbone`; returns the repo id."""
        from timm.models import get_pretrained_cfg

        repo_id = get_pretrained_cfg(backbone).hf_hub_id
        self.add(repo_id, filename, data)
        return repo_id

    def gets(self, filename: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path).strip("/")
        self.requests.append((request.command, path))
        repo_id, _, rest = path.partition("/resolve/")
        _, _, filename = rest.partition("/")
        if not any(repo == repo_id for repo, _ in self.files):
            return self.reply(request, 401, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", body)
        data = self.files.get((repo_id, filename))
        if data is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
            return self.reply(request, 404, headers, b"Entry not found", body)
        etag = hashlib.sha256(data).hexdigest()  # what the Hub gives for LFS files
        self.reply(request, 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, data, body)

    @staticmethod
    def reply(
        request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes, body: bool
    ) -> None:
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(data)
