"""Uploads under load (issue 12 #3), against a live uvicorn server on PostgreSQL with a deliberately small
connection pool. Slow and stalled bodies are sent over raw sockets, so the server sees exactly what a slow
client sends. No assertion here is about speed: a request must answer, and answer right, within generous
bounds."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.live_server import start_server

pytestmark = pytest.mark.integration
API = "/api/v1"
BOUNDARY = "ftgate-test-boundary"
# The test server's pool: fewer connections than slow uploads in flight, and a short wait for one, so a
# request that holds a connection while its body streams starves the others within seconds.
POOL_SIZE = 2
POOL_TIMEOUT_SECONDS = 5
ANSWER_WITHIN_SECONDS = 30  # generous: only "it answers at all", never a speed claim


def dataset(tag: str) -> bytes:
    return f'{{"prompt": "hello {tag}", "completion": "hi {tag}"}}\n'.encode() * 20


def multipart_body(content: bytes, filename: str = "train.jsonl") -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


class RawUpload:
    """An upload over a raw socket: the headers and the first ``sent`` bytes of the body now, the rest
    (``finish``) or nothing more (a stalled client) later."""

    def __init__(self, base_url: str, token: str, content: bytes, sent: int):
        host, port = base_url.removeprefix("http://").split(":")
        self.body = multipart_body(content)
        self.sock = socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN_SECONDS)
        head = (
            f"POST {API}/submissions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + self.body[:sent])
        self.sent = sent

    def send_more(self, n: int) -> None:
        self.sock.sendall(self.body[self.sent:self.sent + n])
        self.sent += n

    def finish(self) -> None:
        self.sock.sendall(self.body[self.sent:])
        self.sent = len(self.body)

    def answered(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def response(self) -> tuple[int, dict[str, str], bytes]:
        resp = http.client.HTTPResponse(self.sock)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(service_settings):
    """serve(**settings) -> (base_url, app): a live server with those settings and a pool of POOL_SIZE."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from api.app import create_app
    from services.db import json_dumps

    servers, engines = [], []

    def start(**overrides):
        app = create_app(service_settings.model_copy(update=overrides))
        # A connection left idle in a transaction (a request stuck holding one) is ended by the server after
        # a while, so it cannot block the next test's TRUNCATE.
        engine = create_engine(service_settings.resolved_database_url, pool_size=POOL_SIZE, max_overflow=0,
                               pool_timeout=POOL_TIMEOUT_SECONDS, json_serializer=json_dumps,
                               connect_args={"options": "-c idle_in_transaction_session_timeout=10000"})
        app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
        app.state.engine = engine
        url, server, thread = start_server(app, timeout_graceful_shutdown=5)
        servers.append((server, thread))
        engines.append(engine)
        return url, app

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)
    for engine in engines:
        engine.dispose()


def wait_until(condition, what: str, seconds: float = ANSWER_WITHIN_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def incoming_files(app) -> list:
    return sorted((app.state.storage.root / "incoming").glob("*.part"))


def artifact_files(app) -> list:
    return sorted(p for p in (app.state.storage.root / "artifacts").rglob("*") if p.is_file())


def count_rows(db, user_id: int | None = None) -> int:
    from sqlalchemy import func, select

    from models import Submission

    db.expire_all()
    stmt = select(func.count()).select_from(Submission)
    if user_id is not None:
        stmt = stmt.where(Submission.user_id == user_id)
    return db.scalar(stmt)


def upload_with_retries(base_url: str, headers: dict, content: bytes, slow_seconds: float = 0.0,
                        max_attempts: int = 120) -> tuple[int, int]:
    """Upload until the server takes it, waiting out each 429's Retry-After. Returns (final status, 429s).
    ``slow_seconds``: the body is sent in two halves this far apart, so uploads overlap."""
    body = multipart_body(content)
    refused = 0
    for _ in range(max_attempts):
        def halves():
            yield body[: len(body) // 2]
            time.sleep(slow_seconds)
            yield body[len(body) // 2:]

        r = httpx.post(f"{base_url}{API}/submissions", content=halves(), timeout=ANSWER_WITHIN_SECONDS,
                       headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        if r.status_code != 429:
            return r.status_code, refused
        refused += 1
        time.sleep(float(r.headers["retry-after"]))
    return 429, refused


@contextmanager
def raw_uploads(base_url: str, token: str, n: int, sent: int) -> Iterator[list[RawUpload]]:
    uploads = [RawUpload(base_url, token, dataset(uuid.uuid4().hex), sent) for _ in range(n)]
    try:
        yield uploads
    finally:
        for u in uploads:
            u.close()


def test_uploads_over_the_users_cap_get_429_with_retry_after_before_the_body_is_read(serve, make_user, db):
    base_url, app = serve(max_concurrent_uploads_per_user=2)
    uid, token, h = make_user()
    _, _, other = make_user(org="other")
    with raw_uploads(base_url, token, 2, sent=200) as slow:
        wait_until(lambda: len(incoming_files(app)) == 2, "both slow uploads are being written")
        # A third upload of the same user: refused from its headers alone (it sends no body at all).
        with raw_uploads(base_url, token, 1, sent=0) as (third,):
            status, headers, body = third.response()
        assert status == 429, body
        assert b"too_many_requests" in body and int(headers["retry-after"]) >= 1
        assert headers["connection"] == "close"  # the unread body is not sent on for nothing
        # The cap is per user: someone else's upload goes through meanwhile.
        r = httpx.post(f"{base_url}{API}/submissions", headers=other, timeout=ANSWER_WITHIN_SECONDS,
                       files={"file": ("train.jsonl", dataset("other"))})
        assert r.status_code == 202, r.text
        for u in slow:
            u.finish()
        assert [u.response()[0] for u in slow] == [202, 202]
    # The slots were given back: the refused upload, retried, gets in.
    assert upload_with_retries(base_url, h, dataset("third")) == (202, 0)
    assert count_rows(db, uid) == 3
    assert app.state.upload_limiter.in_flight(uid) == 0


def test_a_storm_from_one_user_is_capped_and_a_retrying_client_gets_every_upload_in(serve, make_user, db):
    base_url, app = serve(max_concurrent_uploads_per_user=2, max_uploads_per_minute_per_user=0)
    uid, _, h = make_user()
    n = 10
    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        upload_with_retries(base_url, h, dataset(f"storm-{i}"), slow_seconds=0.3))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(status for status, _ in results) == [202] * n
    assert sum(refused for _, refused in results) > 0  # the cap did refuse some (and Retry-After was honoured)
    assert count_rows(db, uid) == n


def test_uploads_beyond_the_per_minute_rate_get_429_until_the_minute_has_passed(app, make_user, db):
    from fastapi.testclient import TestClient

    from services.upload_limits import UploadLimiter

    now = [1000.0]
    app.state.upload_limiter = UploadLimiter(max_in_flight=4, max_per_minute=3, clock=lambda: now[0])
    uid, _, h = make_user()

    def post(tag: str):
        return client.post(f"{API}/submissions", headers=h, files={"file": ("train.jsonl", dataset(tag))})

    with TestClient(app) as client:
        for i in range(3):
            now[0] += 1
            assert post(f"rate-{i}").status_code == 202
        refused = post("rate-3")
        assert refused.status_code == 429 and refused.json()["code"] == "too_many_requests"
        assert int(refused.headers["retry-after"]) == 58  # the first of the three started 58 s before the window ends
        now[0] += 58
        assert post("rate-3").status_code == 202
    assert count_rows(db, uid) == 4


def test_a_stalled_body_gets_408_and_leaves_no_file_and_no_row(serve, make_user, db):
    base_url, app = serve(upload_idle_timeout_seconds=1.0)
    uid, token, _ = make_user()
    with raw_uploads(base_url, token, 1, sent=300) as (stalled,):
        status, headers, body = stalled.response()  # the client sends nothing more
    assert status == 408, body
    assert b"request_timeout" in body and headers.get("connection") == "close"
    assert incoming_files(app) == [] and artifact_files(app) == []
    assert count_rows(db, uid) == 0
    assert app.state.upload_limiter.in_flight(uid) == 0


def test_an_upload_that_never_stalls_but_takes_too_long_gets_408(serve, make_user, db):
    base_url, app = serve(upload_idle_timeout_seconds=1.0, upload_max_seconds=2.0)
    uid, token, _ = make_user()
    with raw_uploads(base_url, token, 1, sent=100) as (dripping,):
        deadline = time.monotonic() + ANSWER_WITHIN_SECONDS
        while not dripping.answered() and time.monotonic() < deadline:
            dripping.send_more(1)  # a byte every 0.2 s: never idle for a second
            time.sleep(0.2)
        status, _, body = dripping.response()
    assert status == 408 and b"longer than 2 s" in body
    assert incoming_files(app) == [] and count_rows(db, uid) == 0


def test_slow_uploads_hold_no_connection_and_other_users_are_served(serve, make_user, db):
    slow_uploads = POOL_SIZE + 2
    base_url, app = serve(max_concurrent_uploads_per_user=slow_uploads, upload_idle_timeout_seconds=120)
    uid, token, _ = make_user()
    _, _, other = make_user(org="other")
    with raw_uploads(base_url, token, slow_uploads, sent=200) as slow:
        wait_until(lambda: len(incoming_files(app)) == slow_uploads, "every slow upload is being written")
        assert app.state.engine.pool.checkedout() == 0  # nobody's body holds a connection
        for _ in range(3):  # more requests than the pool has connections
            r = httpx.get(f"{base_url}{API}/submissions", headers=other, timeout=ANSWER_WITHIN_SECONDS)
            assert r.status_code == 200, r.text
        for u in slow:
            u.finish()
        assert [u.response()[0] for u in slow] == [202] * slow_uploads
    assert count_rows(db, uid) == slow_uploads


def test_no_ghost_when_the_request_fails_after_the_submission_was_written(app, make_user, db, monkeypatch):
    from fastapi.testclient import TestClient

    from api import submissions

    uid, _, h = make_user()
    real_detail = submissions.submission_detail

    def broken_detail(*args, **kwargs):  # e.g. the pool timed out while the answer was being built
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(submissions, "submission_detail", broken_detail)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(f"{API}/submissions", headers=h, files={"file": ("train.jsonl", dataset("ghost"))})
        assert r.status_code == 500
        assert count_rows(db, uid) == 0  # the client saw a failure: nothing was stored
        assert artifact_files(client.app) == [] and incoming_files(client.app) == []
        monkeypatch.setattr(submissions, "submission_detail", real_detail)
        r = client.post(f"{API}/submissions", headers=h, files={"file": ("train.jsonl", dataset("ghost"))})
        assert r.status_code == 202, r.text
    assert count_rows(db, uid) == 1 and len(artifact_files(app)) == 1
