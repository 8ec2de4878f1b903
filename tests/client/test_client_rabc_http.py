"""RabcJobs' HTTP handling against a scripted standard-library server, for what the gateway cannot be made to do on
cue: 503s to retry, a slow reply, replies that are not the API's, an https:// server with its own CA."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sarm_client import (
    DeadlineExceeded,
    InvalidArgument,
    RabcJobs,
    Retry,
    SarmError,
    Timeout,
    Unavailable,
)
from tests.tls import make_pki

JOB_ID = "ab" * 16
JOB = {
    "id": JOB_ID,
    "dataset": "demos",
    "state": "running",
    "params": {"chunk_size": 5},
    "episodes_done": 1,
    "episodes_total": 4,
    "error": None,
    "summary": None,
    "created_at": 1.0,
    "heartbeat_at": 2.0,
    "results": {},
}
RETRY = Retry(attempts=3, backoff=0.01)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def problem(status: int, detail: object, **headers: str) -> Reply:
    return Reply(status, json.dumps({"detail": detail}).encode(), {"content-type": "application/json", **headers})


JOB_REPLY = Reply(200, json.dumps(JOB).encode(), {"content-type": "application/json"})


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, replies: list[Reply]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies = replies
        self.requests: list[tuple[str, str, str | None, bytes]] = []  # method, path, authorization, body


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests.append((self.command, self.path, self.headers.get("authorization"), body))
        reply = self.server.replies.pop(0)
        time.sleep(reply.delay_s)
        self.send_response(reply.status)
        for name, value in {**reply.headers, "content-length": str(len(reply.body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@contextmanager
def scripted(*replies: Reply, tls: ssl.SSLContext | None = None) -> Iterator[Scripted]:
    server = Scripted(list(replies))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: Scripted, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{server.server_address[1]}"


def test_idempotent_calls_are_retried_when_refused_for_now() -> None:
    replies = (problem(503, "backend down"), problem(429, "busy", **{"Retry-After": "0"}), JOB_REPLY)
    with scripted(*replies) as server:
        job = RabcJobs(url(server) + "/", token="t", retry=RETRY).status(JOB_ID)
    assert (job.id, job.state, job.episodes_done, job.episodes_total) == (JOB_ID, "running", 1, 4)
    assert [(m, p, a) for m, p, a, _ in server.requests] == [("GET", f"/v1/rabc/jobs/{JOB_ID}", "Bearer t")] * 3


def test_retries_end_at_the_last_attempt_and_a_submit_is_never_retried() -> None:
    with (
        scripted(problem(503, "backend down"), problem(503, "still down")) as server,
        pytest.raises(Unavailable, match="still down") as down,
    ):
        RabcJobs(url(server), retry=Retry(attempts=2, backoff=0.01)).cancel(JOB_ID)
    assert down.value.http_status == 503 and len(server.requests) == 2
    assert server.requests[0][:3] == ("POST", f"/v1/rabc/jobs/{JOB_ID}:cancel", None)
    with scripted(problem(503, "backend down"), JOB_REPLY) as server, pytest.raises(Unavailable, match="backend down"):
        RabcJobs(url(server), retry=RETRY).submit("demos", 5, stride=2)
    [(method, path, _, body)] = server.requests
    assert (method, path) == ("POST", "/v1/rabc/jobs")
    assert json.loads(body) == {
        "dataset": "demos",
        "chunk_size": 5,
        "kappa": 0.01,
        "eps": 1e-6,
        "stats": "global",
        "stride": 2,
    }


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (Reply(502, b"Bad Gateway\n"), SarmError, "^Bad Gateway$"),  # a proxy's page, not the API's JSON
        (Reply(500), SarmError, "^HTTP 500 Internal Server Error$"),
        (problem(504, "too slow"), DeadlineExceeded, "^too slow$"),
        (problem(400, "There was an error parsing the body"), InvalidArgument, "parsing the body"),
        (
            problem(422, [{"loc": ["body", "stride"], "msg": "too small"}, "odd"]),
            InvalidArgument,
            "^body.stride: too small; odd$",
        ),
        (Reply(200, b"<html>hello</html>"), SarmError, "the reply is not a job .* the gateway's HTTP port"),
    ],
)
def test_replies_map_onto_the_exceptions(reply: Reply, error: type[SarmError], message: str) -> None:
    with scripted(reply) as server, pytest.raises(error, match=message) as raised:
        RabcJobs(url(server)).status(JOB_ID)
    assert type(raised.value) is error
    assert raised.value.http_status == (reply.status if reply.status >= 400 else None)


def test_a_slow_reply_exceeds_the_call_timeout() -> None:
    with scripted(Reply(200, b"{}", delay_s=1.0)) as server, pytest.raises(DeadlineExceeded, match="no reply within"):
        RabcJobs(url(server), timeout=Timeout(call=0.2)).download(JOB_ID)


def test_https_with_the_servers_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    with scripted(JOB_REPLY, JOB_REPLY, tls=context) as server:
        assert RabcJobs(url(server, "https", "localhost"), ca_file=pki.ca).status(JOB_ID).id == JOB_ID
        with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):  # not in the system's roots
            RabcJobs(url(server, "https", "localhost"), retry=Retry(attempts=1)).status(JOB_ID)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "file:///etc/passwd"}, "http:// or https://"),
        ({"base_url": "localhost:8000"}, "http:// or https://"),
        ({"base_url": "http://localhost:8000", "ca_file": "ca.pem"}, "ca_file verifies an https:// server"),
        ({"base_url": "http://localhost:8000", "token": " "}, "token is empty"),
    ],
)
def test_bad_configurations(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RabcJobs(**kwargs)  # type: ignore[arg-type]


def test_wait_needs_a_positive_poll_interval() -> None:
    with pytest.raises(ValueError, match="poll_s"):
        RabcJobs("http://127.0.0.1:9").wait(JOB_ID, poll_s=0)
