"""Uploads under load (issue 12 #3): N concurrent uploads of a small valid dataset from one client, while
another tenant lists its submissions; then the outcome, and the rows the database holds for them.

    python bench/uploads.py [--n 200] [--database-url URL] [--port 8765]
    python bench/uploads.py --url http://host:8000 --token ftg_... --other-token ftg_... --database-url URL

With no --url it starts `ftgate serve --no-worker` itself on a fresh data dir (SQLite there, or the empty
database --database-url names: it is migrated and gets two users in two organisations). Every FTGATE_*
variable of this shell reaches that server, e.g. FTGATE_MAX_CONCURRENT_UPLOADS_PER_USER.

Each upload is a different file (so none is answered as a duplicate) named after this run. A 429 is retried
after its Retry-After; the other outcomes are final. Printed:
  accepted  202s received          429s     refusals seen (each was retried), and uploads still refused at the end
  5xx       server errors          timeouts no answer within --timeout
  ghosts    rows of this run in the database that the client never got a 2xx for
  other tenant: GET /api/v1/submissions latency (p50, p99, max) and non-200 answers during the storm
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
API = "/api/v1"


def small_dataset(run: str, i: int) -> bytes:
    rows = [f'{{"prompt": "Name a colour ({run} #{i}, row {j}).", "completion": "Blue."}}' for j in range(20)]
    return ("\n".join(rows) + "\n").encode()


def make_tenants(database_url: str) -> tuple[str, str]:
    """Two submitters in two organisations on a migrated database: (storm token, other tenant's token)."""
    from services.auth import create_token, create_user
    from services.db import session_scope, upgrade

    upgrade(database_url)
    tag = uuid.uuid4().hex[:6]
    with session_scope(database_url) as s:
        storm = create_user(s, f"storm-{tag}@bench.test", organisation=f"storm-{tag}")
        other = create_user(s, f"other-{tag}@bench.test", organisation=f"other-{tag}")
        return create_token(s, storm, "bench")[1], create_token(s, other, "bench")[1]


def start_server(data_dir: Path, database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "FTGATE_DATA_DIR": str(data_dir), "FTGATE_DATABASE_URL": database_url,
           "FTGATE_SECRET_KEY": os.environ.get("FTGATE_SECRET_KEY") or secrets.token_urlsafe(48),
           # no worker runs, so nothing leaves "queued": the organisation's in-flight quota would stop the
           # storm at 20; the bench measures the per-user upload limits and the pool, not that quota
           "FTGATE_MAX_IN_FLIGHT_PER_ORGANISATION": os.environ.get("FTGATE_MAX_IN_FLIGHT_PER_ORGANISATION", "1000000")}
    proc = subprocess.Popen([sys.executable, "-m", "ftgate.cli", "serve", "--port", str(port), "--no-worker",
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ftgate serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("ftgate serve did not answer within 60 s")


async def one_upload(client: httpx.AsyncClient, token: str, run: str, i: int, give_up_after: float,
                     refusals: Counter) -> tuple[str, str | None]:
    """Upload until answered with anything but 429 (Retry-After honoured). Returns (outcome, submission id)."""
    give_up = time.monotonic() + give_up_after
    while True:
        try:
            r = await client.post(f"{API}/submissions", headers={"Authorization": f"Bearer {token}"},
                                  files={"file": (f"bench-{i}.jsonl", small_dataset(run, i))},
                                  data={"name": f"bench-{run}-{i}"})
        except httpx.TimeoutException:
            return "timeout", None
        except httpx.TransportError as e:
            return f"error:{type(e).__name__}", None
        if r.status_code == 429:
            refusals["429"] += 1
            wait = float(r.headers.get("retry-after", "1"))
            if time.monotonic() + wait > give_up:
                return "429", None
            await asyncio.sleep(wait)
            continue
        if r.status_code in (200, 202):
            return ("accepted" if r.status_code == 202 else "duplicate"), r.json()["id"]
        return ("5xx" if r.status_code >= 500 else f"http_{r.status_code}"), None


async def other_tenant(url: str, token: str, done: asyncio.Event, timeout: float) -> tuple[list[float], Counter]:
    """The other tenant lists its submissions, one call after another, until the storm is over."""
    latencies, failures = [], Counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                r = await client.get(f"{API}/submissions", headers={"Authorization": f"Bearer {token}"})
                if r.status_code != 200:
                    failures[str(r.status_code)] += 1
            except httpx.TimeoutException:
                failures["timeout"] += 1
            except httpx.TransportError as e:
                failures[type(e).__name__] += 1
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    return latencies, failures


async def storm(url: str, token: str, other_token: str, n: int, run: str, timeout: float, give_up_after: float):
    refusals: Counter = Counter()
    done = asyncio.Event()
    watcher = asyncio.create_task(other_tenant(url, other_token, done, timeout))
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        results = await asyncio.gather(*(one_upload(client, token, run, i, give_up_after, refusals)
                                         for i in range(n)))
    wall = time.perf_counter() - t0
    done.set()
    latencies, failures = await watcher
    return results, refusals, wall, latencies, failures


def rows_of_run(database_url: str, run: str) -> set[str]:
    from sqlalchemy import select

    from models import Submission
    from services.db import session_scope

    with session_scope(database_url) as s:
        return set(s.scalars(select(Submission.id).where(Submission.name.like(f"bench-{run}-%"))))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="concurrent uploads")
    p.add_argument("--url", help="a running ftgate (default: start `ftgate serve --no-worker` here)")
    p.add_argument("--token", help="with --url: the uploading user's token")
    p.add_argument("--other-token", help="with --url: another organisation's user, who lists meanwhile")
    p.add_argument("--database-url", default="", help="the server's database, to count rows (ghosts); without "
                   "--url an empty database for the server (default: SQLite in a temporary data dir)")
    p.add_argument("--port", type=int, default=0, help="port of the server started here (default: a free one)")
    p.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, seconds")
    p.add_argument("--give-up-after", type=float, default=600.0, help="stop retrying an upload's 429s after this")
    args = p.parse_args()

    server, tmp = None, None
    if args.url:
        if not (args.token and args.other_token):
            p.error("--url needs --token and --other-token")
        url, token, other_token, database_url = args.url.rstrip("/"), args.token, args.other_token, args.database_url
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ftgate-bench-uploads-")
        data_dir = Path(tmp.name)
        database_url = args.database_url or f"sqlite:///{data_dir / 'ftgate.db'}"
        token, other_token = make_tenants(database_url)
        port = args.port or _free_port()
        server = start_server(data_dir, database_url, port)
        url = f"http://127.0.0.1:{port}"
    run = uuid.uuid4().hex[:8]
    try:
        results, refusals, wall, latencies, failures = asyncio.run(
            storm(url, token, other_token, args.n, run, args.timeout, args.give_up_after))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    outcomes = Counter(outcome for outcome, _ in results)
    answered_ok = {sub_id for _, sub_id in results if sub_id}
    print(f"{args.n} concurrent uploads from one client against {url} in {wall:.1f} s")
    print(f"  accepted (202):   {outcomes['accepted']}")
    if outcomes["duplicate"]:
        print(f"  duplicate (200):  {outcomes['duplicate']}")
    print(f"  429s:             {refusals['429']} refusals seen and retried; {outcomes['429']} uploads gave up")
    print(f"  5xx:              {outcomes['5xx']}")
    print(f"  timeouts:         {outcomes['timeout']}")
    other = {k: v for k, v in outcomes.items() if k not in ("accepted", "duplicate", "429", "5xx", "timeout")}
    if other:
        print(f"  other:            {dict(other)}")
    if database_url:
        rows = rows_of_run(database_url, run)
        print(f"  ghosts:           {len(rows - answered_ok)} (rows of this run in the database: {len(rows)}, "
              f"2xx received: {len(answered_ok)})")
    else:
        print("  ghosts:           not counted (no --database-url)")
    print(f"other tenant, GET {API}/submissions during the storm: {len(latencies)} calls, "
          f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, "
          f"max {max(latencies, default=float('nan')) * 1000:.0f} ms, not 200: {dict(failures) or 0}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
