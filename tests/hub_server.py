"""A local server speaking the part of the Hugging Face Hub protocol that huggingface_hub's downloads use.

Serves model repositories held in memory (checked against huggingface_hub 2.x's file_download.py,
_snapshot_download.py and hf_api.py):

    GET  /api/models/{repo}[/revision/{rev}]                      -> {"id", "sha", "siblings"}
    GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=...     -> [{"type", "path", "oid", "size"[, "lfs"]}]
    HEAD /{repo}/resolve/{rev}/{path}, GET (Range supported)      -> X-Repo-Commit, ETag, X-Linked-Etag/-Size (LFS)

Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub's do. Faults can be
injected per file: serve other bytes than the tree listing promises (`corrupt`), answer 404 for a listed file
(`missing`), or drop the connection halfway through the body (`interrupted`; while armed, the client's resume
requests get 503, so it gives up after one retry instead of resuming).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    branches: dict[str, str] = field(default_factory=dict)

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        item = {"type": "file", "path": path, "oid": git_blob_sha1(data), "size": len(data)}
        if self.is_lfs(path):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    def etag(self, path: str) -> str:
        e = self.entry(path)
        return e["lfs"]["oid"] if "lfs" in e else e["oid"]


class HubServer:
    """The Hub on 127.0.0.1:<free port>; `url` goes into HF_ENDPOINT. Use as a context manager."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.corrupt: dict[tuple[str, str], bytes] = {}
        self.interrupted: set[tuple[str, str]] = set()
        self.missing: set[tuple[str, str]] = set()  # listed in the tree, but 404 on download
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Publish `files` (repo path -> bytes) as the repo's `main`; returns the commit sha."""
        digest = hashlib.sha1()
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        commit = digest.hexdigest()
        self.repos[repo_id] = Repo(dict(files), commit, {"main": commit})
        return commit

    def add_folder(self, repo_id: str, folder: Path) -> str:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_repo(repo_id, files)

    def log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def downloads(self) -> list[str]:
        """Paths of the files whose bodies were requested (GET on /resolve/)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests if m == "GET" and "/resolve/" in p]


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._dispatch(body=True)

        def do_HEAD(self) -> None:
            self._dispatch(body=False)

        def _dispatch(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.log(self.command, path)
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2] + "/" + parts[3], parts[4:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), body)
            else:
                self._error(404, "RepoNotFound", "unknown route")

        def _repo(self, repo_id: str, rev: str) -> tuple[Repo | None, str | None]:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return None, None
            commit = repo.branches.get(rev, rev if rev == repo.commit else None)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", commit=None)
                return None, None
            return repo, commit

        def _api(self, repo_id: str, rest: list[str]) -> None:
            if not rest or rest[0] == "revision":
                repo, commit = self._repo(repo_id, rest[1] if len(rest) > 1 else "main")
                if repo is not None:
                    siblings = [{"rfilename": p} for p in sorted(repo.files)]
                    self._json({"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings})
            elif rest[0] == "tree" and len(rest) >= 2:
                repo, _ = self._repo(repo_id, rest[1])
                if repo is not None:
                    prefix = "/".join(rest[2:])
                    self._json(_tree(repo, prefix))
            else:
                self._error(404, "RepoNotFound", "unknown api route")

        def _resolve(self, repo_id: str, rev: str, file: str, body: bool) -> None:
            repo, commit = self._repo(repo_id, rev)
            if repo is None:
                return
            if file not in repo.files or (repo_id, file) in hub.missing:
                self._error(404, "EntryNotFound", f"{file} does not exist", commit=commit)
                return
            data = hub.corrupt.get((repo_id, file), repo.files[file])
            headers = {"X-Repo-Commit": commit, "ETag": f'"{repo.etag(file)}"', "Accept-Ranges": "bytes"}
            if repo.is_lfs(file):
                headers["X-Linked-Etag"] = f'"{repo.etag(file)}"'
                headers["X-Linked-Size"] = str(len(repo.files[file]))
            status, start = 200, 0
            rng = self.headers.get("Range")
            if rng and body:
                if (repo_id, file) in hub.interrupted:
                    self._error(503, "ServiceUnavailable", "still down", commit=commit)
                    return
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            payload = data[start:]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            if (repo_id, file) in hub.interrupted:
                # Half the body, then the connection dies: the client sees a short read.
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

        def _json(self, obj) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            raw = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

    return Handler


def _tree(repo: Repo, prefix: str) -> list[dict]:
    """Recursive listing under `prefix`: folders (as the Hub lists them) then files."""
    under = [p for p in sorted(repo.files) if not prefix or p.startswith(prefix.rstrip("/") + "/")]
    folders = sorted({"/".join(p.split("/")[:i]) for p in under for i in range(1, p.count("/") + 1)})
    items = [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0} for d in folders]
    return items + [repo.entry(p) for p in under]


def serve_hub(tmp_path, monkeypatch):
    """Yields a running HubServer with HF_ENDPOINT pointing at it, an empty HF_HOME in tmp_path, and the network "on"
    (conftest.py's `hub` fixture).

    huggingface_hub freezes HF_HUB_OFFLINE into its constants at import time, so that is patched too; sliq reads
    the environment on every call and passes the endpoint explicitly. (constants.ENDPOINT must stay as imported:
    hf_hub_url swaps in the explicit endpoint only for URLs that start with it.)
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
