"""Serve a built study on this machine and keep every finished session.

- GET/HEAD: the files of STUDY, and nothing else: no `..`, no hidden files, no symlink out of
  STUDY, never a file of RESULTS (which may sit inside STUDY).
- POST /results: one session as JSON, the shape `data.sessions.session_problems` accepts. It is
  written as RESULTS/<participant>_<task>_<session>.json through a temporary sibling and a
  rename, so a server killed mid-study loses no finished session and leaves no half file (the
  temporary names start with '.', which readers skip). Refused, with nothing written: a body
  over `max_body` bytes (413), no length (411), not JSON or not a session (400), a session
  already saved (409). Other methods get 405.

Binds to 127.0.0.1 unless told otherwise: the server is for a study run on this machine or
behind a proxy the researcher sets up, not a public web server.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..atomic import check_output_folder, write_text
from ..data.sessions import session_file_name, session_problems
from ..errors import InputError

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024  # a 45-trial session is about 100 kB
RESULTS_PATH = "/results"
_TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css",
          ".html": "text/html; charset=utf-8", ".png": "image/png"}


def study_file(study: Path, results: Path, url_path: str) -> Path | None:
    """The file of STUDY (resolved) that a request path names, or None where none may be sent."""
    parts = [p for p in unquote(urlsplit(url_path).path).split("/") if p]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None  # `..`, `.`, hidden files, Windows separators
    target = study.joinpath(*parts) if parts else study / "index.html"
    try:
        target = target.resolve()  # a symlink is judged by where it leads
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(study) or target.is_relative_to(results):
        return None
    return target if target.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "interpscore-study"
    timeout = 60  # a client that stops sending frees its thread

    def log_message(self, format, *args):  # the library logs; it does not print
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, code: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        for key, value in {"Content-Type": "application/json", "X-Content-Type-Options":
                           "nosniff", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self) -> None:
        target = study_file(self.server.study, self.server.results, self.path)
        if target is None:
            return self._reply(404, {"error": "not found"})
        data = target.read_bytes()
        self.send_response(200)
        kind = _TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0]
        self.send_header("Content-Type", kind or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")  # a rebuilt study is seen at once
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = _send_file

    def _refuse(self) -> None:
        self._reply(405, {"error": f"{self.command} is not allowed"},
                    {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def do_POST(self) -> None:
        if urlsplit(self.path).path != RESULTS_PATH:
            return self._reply(404, {"error": f"sessions are posted to {RESULTS_PATH}"})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            return self._reply(411, {"error": "a Content-Length is required"})
        if int(length) > self.server.max_body:
            self.close_connection = True  # the body is never read
            return self._reply(413, {"error": f"a session is at most {self.server.max_body} "
                                              "bytes"})
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            return  # the client went away mid-upload: nothing to keep
        try:
            session = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._reply(400, {"error": "the body is not JSON"})
        problems = session_problems(session)
        if problems:
            return self._reply(400, {"error": "not a session of the study page",
                                     "problems": problems[:10]})
        name = session_file_name(session)
        target = self.server.results / name
        with self.server.lock:  # one check-then-write at a time
            if target.exists():
                return self._reply(409, {"error": "this session is saved already"})
            write_text(target, body.decode("utf-8"))
        log.info("saved %s", target)
        self._reply(201, {"saved": name})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never keeps the process alive

    def __init__(self, address, study: Path, results: Path, max_body: int):
        self.study, self.results, self.max_body = study, results, max_body
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):  # e.g. a full disk: logged, not printed
        log.exception("request from %s failed", client_address[0])


class StudyServer:
    """A study server bound to HOST:PORT (port 0: any free port); `start()` runs it in a
    thread (tests), `serve_forever()` in this one; `stop()` ends either."""

    def __init__(self, study, results, host: str = "127.0.0.1", port: int = 8000,
                 max_body: int = MAX_BODY):
        study, results = Path(study), Path(results)
        if not (study / "study.json").is_file() or not (study / "index.html").is_file():
            raise InputError(f"{study}: not a built study (no study.json and index.html); "
                             "make one with `interpscore study build`")
        study = study.resolve()
        if study.is_relative_to(results.resolve()):
            raise InputError(f"--results {results}: must not be the study folder or a folder "
                             "above it (the study's files would never be served)")
        check_output_folder(results, overwrite=True, option="--results")  # a folder, writable
        results.mkdir(parents=True, exist_ok=True)
        try:
            self._server = _Server((host, port), study, results.resolve(), max_body)
        except OSError as err:
            raise InputError(f"--host {host} --port {port}: cannot listen there "
                             f"({err.strerror}); choose another port") from err
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> StudyServer:
        # a short poll, so that stop() returns quickly
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread:  # shutdown() waits for a serve_forever() that runs
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> StudyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_study(study, results, host: str = "127.0.0.1", port: int = 8000,
                ready=None) -> None:
    """Serve STUDY and keep its sessions in RESULTS until Ctrl-C; `ready(url)` is called once
    the server listens (the CLI prints the address there)."""
    server = StudyServer(study, results, host, port)
    if ready is not None:
        ready(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
