"""A stand-in for the Hugging Face Hub, which cannot be reached from here: the few endpoints
huggingface_hub's `snapshot_download` calls, serving one model repo from memory, on a loopback
port. clusterprep's code path is the real one (huggingface_hub itself, via HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    """`with Hub({"config.json": b"...", "model.safetensors": b"..."}) as hub:` serves the
    repo `hub.repo` at `hub.url`; `hub.authorizations` lists the Authorization headers seen."""

    def __init__(self, files: dict[str, bytes], repo: str = "org/served") -> None:
        self.files, self.repo = files, repo
        self.authorizations: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                hub.authorizations.append(self.headers.get("Authorization"))

            def do_HEAD(self) -> None:
                self._file(send_body=False)

            def do_GET(self) -> None:
                if self.path.startswith(f"/api/models/{hub.repo}/tree/"):
                    self._json([hub._tree_item(name) for name in hub.files])
                elif self.path.startswith(f"/api/models/{hub.repo}"):
                    self._json({"id": hub.repo, "sha": COMMIT,
                                "siblings": [{"rfilename": name} for name in hub.files]})
                else:
                    self._file(send_body=True)

            def _json(self, value: object) -> None:
                body = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, send_body: bool) -> None:
                prefix = f"/{hub.repo}/resolve/"
                name = self.path[len(prefix):].split("/", 1)[-1].split("?")[0]
                data = hub.files.get(name) if self.path.startswith(prefix) else None
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub._etag(name)}"')
                if hub._is_lfs(name):
                    self.send_header("X-Linked-Etag", f'"{hub._etag(name)}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _is_lfs(self, name: str) -> bool:
        return name.endswith((".safetensors", ".bin", ".pth"))

    def _etag(self, name: str) -> str:
        """As the Hub names blobs: the sha256 for LFS files, the git blob sha1 otherwise."""
        data = self.files[name]
        if self._is_lfs(name):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def _tree_item(self, name: str) -> dict[str, object]:
        data = self.files[name]
        item: dict[str, object] = {"type": "file", "path": name, "size": len(data),
                                   "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if self._is_lfs(name):
            item["lfs"] = {"oid": self._etag(name), "size": len(data), "pointerSize": 134}
        return item

    def __enter__(self) -> Hub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
