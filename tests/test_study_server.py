"""The study server (starlette on uvicorn, started for real on 127.0.0.1 and a free port): it
sends the study's files and nothing else, keeps each finished session of its own study once and
whole, refuses every other request with nothing written, logs only POSTs and refusals, and loses
no finished session when it is killed mid-study."""

import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_helpers import UNITS, fake_session, make_store

from interpscore.cli import main
from interpscore.data.responses import read_responses
from interpscore.errors import InputError
from interpscore.study import StudyServer, build_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("store") / "stimuli", units=UNITS[:2])
    return store


@pytest.fixture
def study(built, tmp_path):
    out = build_study(built, tmp_path / "study", trials_per_task=4, catch_per_task=1,
                      demo_trials=1)
    (tmp_path / "secret.txt").write_text("not for the web")  # beside the study
    return out


def _address(server) -> tuple[str, int]:
    """HOST, PORT of a StudyServer or of a server's URL."""
    url = server if isinstance(server, str) else server.url
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return host, int(port)


def _request(server, method, path, body=None, headers=None):
    host, port = _address(server)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.headers, data  # headers: looked up in any case


def _post(server, session, path="/results"):
    body = session if isinstance(session, bytes) else json.dumps(session).encode()
    return _request(server, "POST", path, body, {"Content-Type": "application/json"})


def _files(folder: Path) -> dict:
    """Every file below FOLDER (hidden ones too) and its contents."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def _session(study, **changes):
    return fake_session(json.loads((study / "study.json").read_text()), **changes)


def test_a_session_is_saved_once_and_whole(study, tmp_path):
    results = tmp_path / "results"
    with StudyServer(study, results, port=0) as server:
        session = _session(study, participant="P1", session_id="0a" * 16)
        status, _, reply = _post(server, session)
        assert status == 201
        name = "P1_task_1_" + "0a" * 16 + ".json"
        assert json.loads(reply) == {"saved": name}
        assert json.loads((results / name).read_text()) == session
        before = _files(results)
        assert _post(server, session)[0] == 409  # the same session again
        retried = _bad_trial(session, rt=1234)  # a retry that differs: the first one is kept
        assert _post(server, retried)[0] == 409
        assert _files(results) == before
        # the same participant and task in a new session (a reloaded page) is kept too
        assert _post(server, {**session, "session_id": "0b" * 16})[0] == 201
        assert len(_files(results)) == 2


def _bad(session, **changes):
    return {**session, **changes}


def _bad_trial(session, **changes):
    trials = [dict(t) for t in session["trials"]]
    trials[1].update(changes)
    return {**session, "trials": trials}


BAD_SESSIONS = {
    "a list": lambda s: [s],
    "another format": lambda s: _bad(s, format="interpscore-session/0"),
    "no trials": lambda s: _bad(s, trials=None),
    "no answers": lambda s: _bad(s, trials=s["trials"][:1]),
    "a path as participant": lambda s: _bad(s, participant_id="../../etc"),
    "a bad task": lambda s: _bad(s, task_id="task_1/../x"),
    "a bad session id": lambda s: _bad(s, session_id="not hex"),
    "simulated not a bool": lambda s: _bad(s, simulated="no"),
    "button 7": lambda s: _bad_trial(s, button_pressed=7),
    "a choice that the button does not give": lambda s: _bad_trial(
        s, choice="b" if s["trials"][1]["choice"] == "a" else "a"),
    "correct as a string": lambda s: _bad_trial(s, correct="true"),
    "a reference that is not a path": lambda s: _bad_trial(s, max_references=[1, 2]),
}


@pytest.mark.parametrize("case", BAD_SESSIONS)
def test_a_body_that_is_not_a_session_is_refused(study, tmp_path, case):
    results = tmp_path / "results"
    with StudyServer(study, results, port=0) as server:
        status, _, reply = _post(server, BAD_SESSIONS[case](_session(study)))
        assert status == 400, reply
        assert _files(results) == {}


def _practice(study, **changes):
    """A practice answer to the study's first practice trial, as the page records it."""
    shown = json.loads((study / "study.json").read_text())["demo"][0]
    return {"trial_type": "imi-2afc", "trial_index": 1, "phase": "demo", "time_elapsed": 21000,
            "rt": 900, "button_pressed": 3, "switched_queries": False, "confidence": 1,
            "choice": "b", "correct": True, "is_demo": True, "demo_attempt": 1,
            **{k: shown[k] for k in ("min_query", "max_query", "min_references",
                                     "max_references", "catch_trial", "model", "layer",
                                     "channel", "batch", "mode", "query_path")}, **changes}


def _swapped(session, study):
    trials = [dict(t) for t in session["trials"]]
    for key in ("min_query", "max_query", "min_references", "max_references", "model", "layer",
                "channel", "batch", "query_path"):
        trials[1][key], trials[2][key] = trials[2][key], trials[1][key]
    return {**session, "trials": trials}


# Sessions in the page's shape that are not this study's: (change, what the refusal names)
FOREIGN_SESSIONS = {
    "another study's id": (lambda s, st: _bad(s, study_id="0123456789abcdef"),
                           "study_id: '0123456789abcdef' is not this study's"),
    "a task the study lacks": (lambda s, st: _bad(s, task_id="task_2"),
                               "task_id: task_2 is not a task of this study"),
    "an image from elsewhere": (
        lambda s, st: _bad_trial(s, max_query="https://elsewhere.example/x.png"),
        r"trials\[1\]: is not trial 1 of task_1 \(differs in max_query\)"),
    "references in another order": (
        lambda s, st: _bad_trial(s, min_references=s["trials"][1]["min_references"][::-1]),
        r"trials\[1\]: .*differs in min_references"),
    "another unit named": (lambda s, st: _bad_trial(s, channel=99),
                           r"trials\[1\]: .*differs in channel"),
    "the trials in another order": (_swapped, r"trials\[1\]: is not trial 1 of task_1"),
    "an answer too many": (lambda s, st: _bad(s, trials=s["trials"] + s["trials"][-1:]),
                           "trials: 6 main answers, but task_1 has 5 trials"),
    "completed with answers missing": (lambda s, st: _bad(s, trials=s["trials"][:3]),
                                       "completed: true, but 2 of the 5 trials of task_1"),
    "a practice trial the study never showed": (
        lambda s, st: _bad(s, trials=s["trials"][:1] + [_practice(
            st, max_query="images/toy/layer1/channel_0/natural_images/batch_1/max_0.png")]
            + s["trials"][1:]),
        r"trials\[1\]: is not practice trial 1 of this study \(differs in max_query\)"),
    "more practice than the study allows": (
        lambda s, st: _bad(s, trials=s["trials"][:1] + [_practice(st)] * 4 + s["trials"][1:]),
        "4 practice answers, more than this study's 1 practice trials allow"),
}


@pytest.mark.parametrize("case", FOREIGN_SESSIONS)
def test_a_session_of_another_study_or_task_is_refused(study, tmp_path, case):
    change, named = FOREIGN_SESSIONS[case]
    results = tmp_path / "results"
    with StudyServer(study, results, port=0) as server:
        status, _, reply = _post(server, change(_session(study), study))
        assert status == 400, reply
        reply = json.loads(reply)
        assert reply["error"] == "not a session of this study"
        assert any(re.search(named, p) for p in reply["problems"]), reply["problems"]
        assert _files(results) == {}


def test_a_session_of_the_study_is_kept_with_its_practice(study, tmp_path):
    """The practice answers of a session that passed, and a session that failed the practice
    (no main answers, `completed: false`), are this study's."""
    results = tmp_path / "results"
    with StudyServer(study, results, port=0) as server:
        session = _session(study, participant="P3")
        session["trials"][1:1] = [_practice(study), _practice(study, demo_attempt=2)]
        assert _post(server, session)[0] == 201
        failed = {**_session(study, participant="P4"), "completed": False,
                  "trials": session["trials"][:2]}
        assert _post(server, failed)[0] == 201
        assert sorted(_files(results)) == [f"P3_task_1_{'ab' * 16}.json",
                                           f"P4_task_1_{'ab' * 16}.json"]


def test_a_rebuilt_study_takes_its_new_sessions_only(built, study, tmp_path):
    results = tmp_path / "results"
    old = _session(study, participant="old")
    with StudyServer(study, results, port=0) as server:
        build_study(built, study, trials_per_task=4, catch_per_task=1, demo_trials=1, seed=1,
                    overwrite=True)
        new = _session(study, participant="new")
        assert new["study_id"] != old["study_id"]
        assert _post(server, old)[0] == 400
        assert _post(server, new)[0] == 201
    assert sorted(_files(results)) == [f"new_task_1_{'ab' * 16}.json"]


def test_bad_uploads_are_refused_and_nothing_is_written(study, tmp_path):
    results = tmp_path / "results"
    with StudyServer(study, results, port=0, max_body=10_000) as server:
        assert _post(server, b"{not json")[0] == 400
        assert _post(server, b"\xff\xfe{}")[0] == 400
        assert _post(server, _session(study), path="/results/x")[0] == 404
        assert _post(server, _session(study), path="/index.html")[0] == 404
        # too large: refused from its length, before it is read
        with socket.create_connection(_address(server), timeout=10) as raw:
            raw.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 6000000\r\n\r\n{")
            assert raw.recv(100).startswith(b"HTTP/1.1 413")
        with socket.create_connection(_address(server), timeout=10) as raw:  # no length
            raw.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\n\r\n{}")
            assert raw.recv(100).startswith(b"HTTP/1.1 411")
        with socket.create_connection(_address(server), timeout=10) as raw:  # chunked: no length
            raw.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                        b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 411")
        with socket.create_connection(_address(server), timeout=10) as raw:
            # a small length and a chunked body past it: read no further than the length
            raw.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + b"4000\r\n" + b"x" * 0x4000
                        + b"\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 4")
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/results", "/study.json"):
                status, headers, _ = _request(server, method, path, b"{}")
                assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
        assert _files(results) == {}
        assert json.loads((study / "study.json").read_text())  # untouched by PUT/DELETE


def test_only_the_study_files_are_served(study, tmp_path):
    results = study / "results"  # inside the study: still never served
    (study / "link.txt").symlink_to(tmp_path / "secret.txt")
    (study / "images" / "outside").symlink_to(tmp_path)
    (study / ".hidden").write_text("no")
    with StudyServer(study, results, port=0) as server:
        status, headers, body = _request(server, "GET", "/")
        assert status == 200 and body == (study / "index.html").read_bytes()
        assert headers["Content-Type"].startswith("text/html")
        status, headers, body = _request(server, "GET", "/vendor/jspsych.min.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        status, headers, body = _request(server, "HEAD", "/study.json")
        assert status == 200 and body == b"" and \
            int(headers["Content-Length"]) == (study / "study.json").stat().st_size
        image = json.loads((study / "study.json").read_text())["demo"][0]["max_query"]
        status, headers, body = _request(server, "GET", "/" + image)
        assert (status, headers["Content-Type"], body) == (200, "image/png",
                                                           (study / image).read_bytes())
        assert _post(server, _session(study, participant="P2"))[0] == 201
        (saved,) = results.iterdir()
        for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/images/%2E%2E/%2e%2e/secret.txt",
                     "/..%2fsecret.txt", "/images/..%5c..%5csecret.txt", "//etc/passwd",
                     "/%2Fetc%2Fpasswd", f"/{tmp_path}/secret.txt", "/link.txt",
                     "/images/outside/secret.txt", "/.hidden", "/results",
                     f"/results/{saved.name}", "/results/../results/" + saved.name,
                     "/images/", "/nothing.html", "/study.json%00.png"]:
            for method in ("GET", "HEAD"):
                status, _, body = _request(server, method, path)
                assert status == 404, (method, path)
                assert b"not for the web" not in body and b"trials" not in body


def test_serving_needs_a_study_and_a_free_port(study, tmp_path):
    with pytest.raises(InputError, match="not a built study"):
        StudyServer(tmp_path / "nothing", tmp_path / "results")
    with pytest.raises(InputError, match="--results .*must not be the study folder"):
        StudyServer(study, study)
    with pytest.raises(InputError, match="--results .*is a file"):
        StudyServer(study, tmp_path / "secret.txt")
    with pytest.raises(InputError, match="--host 192.0.2.1: not an address of this machine"):
        StudyServer(study, tmp_path / "elsewhere", host="192.0.2.1", port=0)
    with StudyServer(study, tmp_path / "results", port=0) as server:
        port = _address(server)[1]
        with pytest.raises(InputError, match=rf"--port {port}: already in use on 127.0.0.1 "
                                             r"\(try another port\)"):
            StudyServer(study, tmp_path / "new" / "results", port=port)
    assert not (tmp_path / "new").exists() and not (tmp_path / "elsewhere").exists()


def test_the_command_on_a_busy_port_exits_2_and_makes_nothing(study, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["study", "serve", str(study), "--results", str(tmp_path / "answers"),
                     "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: --port {port}: already in use on 127.0.0.1 (try another port)\n"
    assert "Traceback" not in err and not (tmp_path / "answers").exists()


def test_only_posts_and_refusals_are_logged(study, tmp_path, caplog):
    image = json.loads((study / "study.json").read_text())["demo"][0]["max_query"]
    with caplog.at_level(logging.DEBUG):
        with StudyServer(study, tmp_path / "results", port=0) as server:
            for path in ["/", "/study.json", "/vendor/jspsych.min.js", "/" + image] * 5:
                assert _request(server, "GET", path)[0] == 200
            assert _request(server, "GET", "/missing.png")[0] == 404
            assert _post(server, _session(study, participant="P5"))[0] == 201
            assert _post(server, {**_session(study), "study_id": "x"})[0] == 400
            assert _request(server, "DELETE", "/study.json")[0] == 405
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("interpscore")]
    assert len(ours) == 4, ours
    assert ours[0] == "GET /missing.png: 404"
    assert ours[1].startswith("POST /results from 127.0.0.1: 201 ")
    assert ours[2].startswith("POST /results from 127.0.0.1: 400 ") and "study_id" in ours[2]
    assert ours[3] == "DELETE /study.json: 405"
    served = [r for r in caplog.records if image in r.getMessage() or "jspsych" in
              r.getMessage()]
    assert served == []  # no access log of the files a page loads, from uvicorn either


def _partial_upload(url: str, session: dict) -> socket.socket:
    """A participant whose upload is cut off halfway."""
    body = json.dumps(session).encode()
    raw = socket.create_connection(_address(url), timeout=10)
    raw.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    return raw


def test_a_killed_server_keeps_every_finished_session(study, tmp_path):
    results = tmp_path / "results"
    code = ("import sys; from interpscore.study.serve import serve_study; "
            "serve_study(sys.argv[1], sys.argv[2], port=0, ready=lambda url: print(url, "
            "flush=True))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-c", code, str(study), str(results)],
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = process.stdout.readline().strip()
        sessions = [_session(study, participant=f"P{i}", session_id=f"{i:02d}" * 16)
                    for i in range(3)]
        for session in sessions:
            assert _post(url, session)[0] == 201
        cut = _partial_upload(url, _session(study, participant="P9", session_id="99" * 16))
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # mid-upload
        process.wait(10)
        cut.close()
    finally:
        process.kill()
        process.stdout.close()
    names = [f"P{i}_task_1_{f'{i:02d}' * 16}.json" for i in range(3)]
    assert sorted(_files(results)) == names  # no half file of P9
    for name, session in zip(names, sessions):
        assert json.loads((results / name).read_text()) == session
    # a kill during a write leaves at most a temporary sibling, which no reader takes for a session
    (results / f".P9_task_1_{'99' * 16}.json.abc123.tmp").write_text('{"format": "interp')
    table = read_responses(results)
    assert sorted(set(table["participant_id"])) == ["P0", "P1", "P2"]
    # a server started again on the same RESULTS knows what was saved
    with StudyServer(study, results, port=0) as again:
        assert _post(again, sessions[0])[0] == 409


def test_an_upload_that_stops_arriving_is_dropped(study, tmp_path, monkeypatch):
    monkeypatch.setattr("interpscore.study.serve.BODY_TIMEOUT_S", 0.5)
    results = tmp_path / "results"
    with StudyServer(study, results, port=0) as server:
        cut = _partial_upload(server.url, _session(study))
        assert cut.recv(100).startswith(b"HTTP/1.1 408")
        cut.close()
        assert _post(server, _session(study, participant="P6"))[0] == 201  # still serving
    assert sorted(_files(results)) == [f"P6_task_1_{'ab' * 16}.json"]


def test_a_server_stopped_mid_upload_stops_at_once(study, tmp_path):
    results = tmp_path / "results"
    server = StudyServer(study, results, port=0).start()
    assert _post(server, _session(study, session_id="01" * 16))[0] == 201
    cut = _partial_upload(server.url, _session(study, session_id="02" * 16))
    time.sleep(0.2)
    start = time.perf_counter()
    server.stop()
    assert time.perf_counter() - start < 5
    cut.close()
    assert sorted(_files(results)) == [f"p1_task_1_{'01' * 16}.json"]


def test_the_server_loads_no_network_code():
    code = ("import sys, interpscore.study.serve; "
            "print(sorted({'torch', 'lightning', 'timm'} & set(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "[]"
