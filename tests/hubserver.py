"""A stand-in for the Hugging Face Hub, which cannot be reached from here: the endpoints
huggingface_hub's `model_info`, `list_repo_tree` and `snapshot_download` call, serving model
repos from memory on a loopback port, with the Hub's answers (a repo's `sha` and `siblings`, a
recursive tree of files and folders with their git oid and LFS sha256, files under
`/resolve/` with `X-Repo-Commit`, `ETag`, `X-Linked-Etag`/`X-Linked-Size` for LFS files, and
byte ranges for resumed downloads). clusterprep's code path is the real one: huggingface_hub
itself, pointed here by HF_ENDPOINT.

Faults a real Hub or its CDN can show: a file sent slowly (`slow`), or sent with other bytes
than the ones listed (`garbled`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    """`with Hub({"config.json": b"...", "model.safetensors": b"..."}) as hub:` serves the
    repo `hub.repo` at `hub.url` (more with `serve`); `hub.authorizations` lists the
    Authorization headers seen, `hub.downloads` the (repo, path) of each file body sent."""

    def __init__(self, files: dict[str, bytes], repo: str = "org/served") -> None:
        self.files, self.repo = files, repo
        self.repos: dict[str, dict[str, bytes]] = {repo: files}
        self.authorizations: list[str | None] = []
        self.downloads: list[tuple[str, str]] = []
        self.slow: dict[tuple[str, str], float] = {}   # (repo, path) -> seconds per MiB
        self.garbled: set[tuple[str, str]] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                hub.authorizations.append(self.headers.get("Authorization"))

            def do_HEAD(self) -> None:
                self._file(send_body=False)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                for repo, files in hub.repos.items():
                    api = f"/api/models/{repo}"
                    if url.path.startswith(f"{api}/tree/"):
                        recursive = parse_qs(url.query).get("recursive", ["false"])[0]
                        return self._json(hub._tree(files, recursive.lower() == "true"))
                    if url.path == api or url.path.startswith(f"{api}/revision/"):
                        return self._json({"id": repo, "modelId": repo, "sha": COMMIT,
                                           "siblings": [{"rfilename": n} for n in files]})
                self._file(send_body=True)

            def _json(self, value: object) -> None:
                body = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, send_body: bool) -> None:
                path = urlsplit(self.path).path
                repo = next((r for r in hub.repos if path.startswith(f"/{r}/resolve/")), None)
                name = path[len(f"/{repo}/resolve/"):].split("/", 1)[-1] if repo else ""
                data = hub.repos[repo].get(name) if repo else None
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{_etag(name, data)}"')
                if _is_lfs(name):
                    self.send_header("X-Linked-Etag", f'"{_etag(name, data)}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if send_body:
                    hub.downloads.append((repo, name))
                    self._body(data[start:], hub.slow.get((repo, name)),
                               (repo, name) in hub.garbled)

            def _body(self, data: bytes, seconds_per_mib: float | None, garbled: bool) -> None:
                if garbled:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                step = 1 << 16
                for offset in range(0, len(data), step):
                    self.wfile.write(data[offset:offset + step])
                    if seconds_per_mib:
                        time.sleep(seconds_per_mib * step / (1 << 20))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, repo: str, files: dict[str, bytes]) -> None:
        """Serve one more repo (at the same commit)."""
        self.repos[repo] = files

    def _tree(self, files: dict[str, bytes], recursive: bool) -> list[dict[str, object]]:
        """The Hub's tree listing: folders, then files, each with its git oid."""
        names = sorted(files) if recursive else sorted(n for n in files if "/" not in n)
        folders = sorted({"/".join(n.split("/")[:i]) for n in files
                          for i in range(1, n.count("/") + 1)})
        if not recursive:
            folders = [f for f in folders if "/" not in f]
        items: list[dict[str, object]] = [
            {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0,
             "path": f} for f in folders]
        for name in names:
            data = files[name]
            item: dict[str, object] = {"type": "file", "oid": _git_sha1(data),
                                       "size": len(data), "path": name}
            if _is_lfs(name):
                item["lfs"] = {"oid": _etag(name, data), "size": len(data), "pointerSize": 134}
            items.append(item)
        return items

    def __enter__(self) -> Hub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _is_lfs(name: str) -> bool:
    return name.endswith((".safetensors", ".bin", ".pth"))


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _etag(name: str, data: bytes) -> str:
    """As the Hub names blobs: the sha256 for LFS files, the git blob sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if _is_lfs(name) else _git_sha1(data)
