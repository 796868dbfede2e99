"""Serve a built study on this machine and keep every finished session (starlette on uvicorn).

- GET/HEAD: the files of STUDY, and nothing else: no `..`, no hidden files, no symlink out of
  STUDY, never a file of RESULTS (which may sit inside STUDY).
- POST /results: one session of THIS study as JSON: the shape `data.sessions.session_problems`
  accepts, and one of the study's sessions by `data.sessions.not_of_study` (its study id, one of
  its tasks, that task's trials), the rule `prepare` reads sessions by. It is written as
  RESULTS/<participant>_<task>_<session>.json through a temporary sibling and a rename, so a
  server killed mid-study loses no finished session and leaves no half file (the temporary
  names start with '.', which readers skip). Refused, with nothing written: a body over
  `max_body` bytes (413), no length (411), not JSON, not a session or not this study's (400),
  a session already saved (409), a body that stops arriving (408). Other methods get 405.

Binds to 127.0.0.1 unless told otherwise: the server is for a study run on this machine or
behind a proxy the researcher sets up. Logged (logger `interpscore.study.serve`): each POST and
each refused request, not every image a page loads.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import mimetypes
import socket
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..atomic import check_output_folder, write_text
from ..data.sessions import not_of_study, read_study, session_file_name, session_problems
from ..errors import InputError

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024  # a 45-trial session is about 100 kB
BODY_TIMEOUT_S = 60  # a client that stops sending frees its connection
RESULTS_PATH = "/results"
ALLOW = "GET, HEAD, POST"
_TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css",
          ".html": "text/html; charset=utf-8", ".png": "image/png"}
_HEADERS = {"X-Content-Type-Options": "nosniff"}


def _shown(path: str) -> str:
    """A request path as a log line may hold it: cut, and escaped (no forged second line)."""
    return path[:200].encode("unicode_escape").decode()


def study_file(study: Path, results: Path, url_path: str) -> Path | None:
    """The file of STUDY (resolved) that a decoded request path names, or None where none may
    be sent. The path is decoded once, by the server: it is never unquoted again here."""
    parts = [p for p in url_path.split("/") if p]
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


def _reply(code: int, payload: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(payload, code, headers={**_HEADERS, **(headers or {})})


class _Study:
    """study.json, read again when a rebuilt study replaces it (its page names the new id)."""

    def __init__(self, folder: Path):
        self.folder, self._seen, self._study = folder, None, None

    def get(self) -> dict:
        stat = (self.folder / "study.json").stat()
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            self._study = read_study(self.folder, option="STUDY")
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return self._study


def study_app(study: Path, results: Path, max_body: int = MAX_BODY) -> Starlette:
    """The ASGI application: STUDY's files, and sessions of STUDY into RESULTS (both resolved)."""
    known = _Study(study)

    async def send_file(request: Request) -> Response:
        target = study_file(study, results, request.scope["path"])
        if target is None:
            log.warning("%s %s: 404", request.method, _shown(request.scope["path"]))
            return _reply(404, {"error": "not found"})
        kind = _TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0]
        return FileResponse(target, media_type=kind or "application/octet-stream",
                            headers={**_HEADERS, "Cache-Control": "no-cache"})  # rebuilds show

    async def read_body(request: Request, length: int) -> bytes | None:
        """The body, or None where it is not `length` bytes: reading stops at the first byte
        past it (a chunked body may come with any Content-Length), so nothing larger is held."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > length:
                return None
            chunks.append(chunk)
        return b"".join(chunks) if size == length else None

    async def save(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            return _reply(411, {"error": "a Content-Length is required"}, {"Connection": "close"})
        if int(length) > max_body:  # the body is never read
            return _reply(413, {"error": f"a session is at most {max_body} bytes"},
                          {"Connection": "close"})
        try:
            body = await asyncio.wait_for(read_body(request, int(length)), BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return _reply(408, {"error": "the session stopped arriving"}, {"Connection": "close"})
        except ClientDisconnect:
            body = None
        if body is None:
            return Response(status_code=400)  # the client went away mid-upload: nothing to keep
        try:
            session = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _reply(400, {"error": "the body is not JSON"})
        problems = session_problems(session)
        if problems:
            return _reply(400, {"error": "not a session of the study page",
                                "problems": problems[:10]})
        problems = not_of_study(session, known.get())
        if problems:
            return _reply(400, {"error": "not a session of this study", "problems": problems[:10]})
        name = session_file_name(session)
        target = results / name
        # No await between the check and the write: on the one event loop no other upload
        # runs between them, so a session is written once.
        if target.exists():
            return _reply(409, {"error": "this session is saved already"})
        write_text(target, body.decode("utf-8"))
        return _reply(201, {"saved": name})

    async def endpoint(request: Request) -> Response:
        method = request.method
        if method in ("GET", "HEAD"):
            return await send_file(request)
        if method != "POST":
            log.warning("%s %s: 405", method[:20], _shown(request.scope["path"]))
            return _reply(405, {"error": f"{method} is not allowed"}, {"Allow": ALLOW})
        if request.scope["path"] != RESULTS_PATH:
            reply = _reply(404, {"error": f"sessions are posted to {RESULTS_PATH}"})
        else:
            try:
                reply = await save(request)
            except Exception:  # e.g. a full disk: logged here, the page gets a 500 and keeps a copy
                log.exception("POST %s failed", RESULTS_PATH)
                return _reply(500, {"error": "the session could not be saved"})
        _log_post(request, reply)
        return reply

    return Starlette(routes=[Route("/{path:path}", _EveryMethod(endpoint))])


class _EveryMethod:
    """An endpoint that answers every method itself (a plain function route takes only GET),
    so that a refused method gets the same JSON 405 on every path."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _log_post(request: Request, reply: Response) -> None:
    detail = reply.body.decode(errors="replace")[:300] if reply.body else ""
    level = logging.INFO if reply.status_code == 201 else logging.WARNING
    client = request.client.host if request.client else "?"
    log.log(level, "POST %s from %s: %d %s", _shown(request.scope["path"]), client,
            reply.status_code, detail)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on HOST:PORT, or InputError saying which option to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise InputError(f"--host {host}: not an address of this machine ({err.strerror}); "
                         "give an IP address such as 127.0.0.1") from err
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart needs no wait
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"--host {host}: not an address of this machine ({err.strerror}); "
                             "give one of its addresses, e.g. 127.0.0.1") from err
        problem = f"already in use on {host}" if err.errno == errno.EADDRINUSE else \
            f"cannot listen on {host}: {err.strerror}"
        raise InputError(f"--port {port}: {problem} (try another port)") from err
    sock.set_inheritable(True)
    return sock


class StudyServer:
    """A study server bound to HOST:PORT (port 0: any free port); `start()` runs it in a
    thread (tests), `serve_forever()` in this one; `stop()` ends either. Everything is checked,
    and the port bound, before RESULTS is made."""

    def __init__(self, study, results, host: str = "127.0.0.1", port: int = 8000,
                 max_body: int = MAX_BODY):
        study, results = Path(study), Path(results)
        if not (study / "study.json").is_file() or not (study / "index.html").is_file():
            raise InputError(f"{study}: not a built study (no study.json and index.html); "
                             "make one with `interpscore study build`")
        read_study(study, option="STUDY")  # readable, before anyone is sent to it
        study = study.resolve()
        if study.is_relative_to(results.resolve()):
            raise InputError(f"--results {results}: must not be the study folder or a folder "
                             "above it (the study's files would never be served)")
        check_output_folder(results, overwrite=True, option="--results")  # a folder, writable
        self._socket = _bind(str(host), int(port))  # an option type may subclass int
        try:
            results.mkdir(parents=True, exist_ok=True)
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(study_app(study, results.resolve(), max_body), http="h11",
                                loop="asyncio", lifespan="off", log_config=None,
                                access_log=False, server_header=False,
                                timeout_graceful_shutdown=1)  # a stalled upload ends a stop
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> StudyServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join()
        self._socket.close()

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
