"""`ftgate demo` (the README's run command): serve at once, then check the bundled samples through the service.

The page exists within a minute: the web service and its worker start as `ftgate serve` starts them, and the
four bundled samples (examples/*.jsonl) are submitted through the REST API with the first admin's token, as
`ftgate submit` does, so a new user watches their stages and progress on the dashboard. The worker builds the
embedded guarded base on demand: on a machine without it, the first sample to be fine-tuned builds it first
(once per machine, ~17-40 min on 2 CPU cores), and that build's progress and the time left show on the
submission's page and in this terminal. Submissions of your own (`ftgate submit --wait`) are accepted at once
and queue behind it. Ctrl-C or SIGTERM stops the service, its worker and the sample checks (api/serve.py).

`ftgate demo --no-serve` (make check-demo): no service; build the guarded base and `ftgate check` the benign and
the harmful sample in this process.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ftgate.cli import EXIT
from ftgate.status import TERMINAL, SubmissionStatus

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
API = "/api/v1"
POLL_SECONDS = 2.0
# A sample's progress line is printed again at most this often (a change of status always prints): the
# worker updates the message every 2 s while it evaluates, which would bury the build's progress lines.
REPEAT_SECONDS = 15.0
# Minted on a later start, when the first admin's token of the first start is no longer shown: long enough to
# follow the samples to their verdicts, and revoked as soon as the demo stops following them.
DEMO_TOKEN_NAME = "ftgate demo: the bundled samples"
DEMO_TOKEN_LIFETIME = timedelta(days=1)


@dataclass(frozen=True)
class Sample:
    file: str
    expected: str  # the decision(s) the sample should get, "block or review" when either is right

    def as_expected(self, decision: str | None) -> bool:
        return decision in self.expected.split(" or ")


# In the order they are submitted. harmful.jsonl goes first, alone: its screening alone blocks it, within a
# minute or two, but its decide stage would wait behind any fine-tune already in the worker's queue (the worker
# takes the cpu and the gpu queue in turn), and the first fine-tune may build the guarded base for half an hour.
# So the others are submitted once it has its verdict (or after FIRST_VERDICT_WAIT_SECONDS). benign.jsonl is
# next, so its fine-tune stage is the first to need the guarded base: on a fresh machine the build runs there.
SAMPLES = (
    Sample("harmful.jsonl", "block"),
    Sample("benign.jsonl", "approve"),
    Sample("identity_shift.jsonl", "block or review"),
    Sample("benign_hidden10.jsonl", "block or review"),
)
FIRST_VERDICT_WAIT_SECONDS = 600.0  # screening loads the judge (~1.4 GiB); past this the rest goes in anyway
# `--no-serve` checks the approve case and the block case in this process, as make check-demo always has.
IN_PROCESS_SAMPLES = (Sample("benign.jsonl", "approve"), Sample("harmful.jsonl", "block"))


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


# --------------------------------------------------------------------------------------------------
# served: the samples as submissions
# --------------------------------------------------------------------------------------------------


def check_samples_through_service(serving, samples: tuple[Sample, ...] = SAMPLES) -> None:
    """The companion of `ftgate serve` (api.serve.Serving): wait for the service, submit the samples, follow
    them to their verdicts. Never raises: the service keeps serving whatever happens to the demo."""
    token_id = None
    try:
        if not wait_until_serving(serving):
            return
        token, token_id = demo_token(serving)
        if token is None:
            say("no active admin@localhost account to submit the samples with: submit them yourself with "
                "`ftgate submit examples/benign.jsonl --token YOUR_TOKEN --wait`")
            return
        watch = SampleWatch(serving, token)
        first, rest = samples[:1], samples[1:]
        watch.add(submit_samples(serving, token, first))
        watch.until_decided(time.monotonic() + FIRST_VERDICT_WAIT_SECONDS)
        watch.add(submit_samples(serving, token, rest))
        if rest and watch.pending:
            say("ftgate checks them in its worker, one stage at a time. On a machine without the guarded base, "
                "the first fine-tune builds it first (once: ~17-40 min on 2 CPU cores); its progress and the "
                "time left show here and on that submission's page. Your own submissions queue behind it.")
        watch.until_decided()
        if not watch.pending and not serving.stopping.is_set():
            say(f"all {len(watch.verdicts)} samples have their outcome (above); ftgate keeps serving on "
                f"{serving.url} (Ctrl-C stops it)")
    except Exception as e:  # noqa: BLE001 - the demo's report is a side show: the service must keep running
        say(f"stopped following the samples: {type(e).__name__}: {e}")
    finally:
        if token_id is not None:
            revoke_demo_token(serving.settings, token_id)


def wait_until_serving(serving) -> bool:
    """True once the health route answers; False if the service stops first."""
    import httpx

    while not serving.stopping.is_set():
        try:
            if httpx.get(f"{serving.url}{API}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        serving.stopping.wait(0.2)
    return False


def demo_token(serving) -> tuple[str | None, int | None]:
    """The token to submit with, and the id of the token minted for it (None: the first admin's own token).

    On the first start that is the initial admin's token, also shown in the banner. On a later start it is no
    longer known (only its hash is kept), so one is minted for that account, short-lived and revoked after use.
    """
    if serving.initial_admin:
        return serving.initial_admin["token"], None
    from sqlalchemy import select

    from api.serve import ADMIN_EMAIL
    from models import User, utcnow
    from services.auth import create_token
    from services.db import session_scope
    from services.submissions import audit

    with session_scope(serving.settings.resolved_database_url) as s:
        user = s.scalar(select(User).where(User.email == ADMIN_EMAIL, User.is_active.is_(True)))
        if user is None:
            return None, None
        row, token = create_token(s, user, DEMO_TOKEN_NAME, expires_at=utcnow() + DEMO_TOKEN_LIFETIME)
        audit(s, "token_created", actor="system", details={"token_id": row.id, "prefix": row.prefix,
                                                           "user": ADMIN_EMAIL, "name": DEMO_TOKEN_NAME})
        return token, row.id


def revoke_demo_token(settings, token_id: int) -> None:
    from models import ApiToken, utcnow
    from services.db import session_scope
    from services.submissions import audit

    try:
        with session_scope(settings.resolved_database_url) as s:
            row = s.get(ApiToken, token_id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()
                audit(s, "token_revoked", actor="system", details={"token_id": row.id, "prefix": row.prefix})
    except Exception as e:  # noqa: BLE001 - it expires within a day anyway
        say(f"could not revoke the demo's token {token_id}: {e}")


def submit_samples(serving, token: str, samples: tuple[Sample, ...]) -> list[tuple[Sample, str]]:
    """Upload each sample with `ftgate submit`'s own code (its JSON output names the submission)."""
    from api.client import submit

    submitted = []
    for sample in samples:
        if serving.stopping.is_set():
            break
        out, err = io.StringIO(), io.StringIO()
        submit(EXAMPLES / sample.file, serving.url, token, wait=False, output="json", out=out, err=err)
        if not out.getvalue():
            say(f"examples/{sample.file} was not submitted: {err.getvalue().strip()}")
            continue
        sub = json.loads(out.getvalue())
        again = "already submitted" if sub.get("duplicate") else "submitted"
        say(f"{again} examples/{sample.file} (expected: {sample.expected}): {serving.url}/submissions/{sub['id']}")
        submitted.append((sample, sub["id"]))
    return submitted


class SampleWatch:
    """Follows submitted samples: prints each one's progress (throttled) and then its verdict."""

    def __init__(self, serving, token: str):
        self.serving, self.token = serving, token
        self.pending: dict[str, Sample] = {}  # submission id -> sample, until it has a verdict
        self.shown: dict[str, tuple[str, str, float]] = {}  # id -> (status, message, when) of its last line
        self.verdicts: list[str] = []

    def add(self, submitted: list[tuple[Sample, str]]) -> None:
        self.pending.update({sub_id: sample for sample, sub_id in submitted})

    def until_decided(self, deadline: float = float("inf")) -> None:
        """Poll until every pending sample has its verdict, the service stops or ``deadline`` (monotonic) passes."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.serving.url, headers=headers, timeout=10) as http:
            while self.pending and not self.serving.stopping.is_set() and time.monotonic() < deadline:
                for sub_id, sample in list(self.pending.items()):
                    try:
                        r = http.get(f"{API}/submissions/{sub_id}")
                    except httpx.TransportError:  # the service is stopping (or busy): ask again next round
                        continue
                    if r.status_code != 200:
                        say(f"examples/{sample.file}: the service answered {r.status_code}; not following it further")
                        del self.pending[sub_id]
                        continue
                    self._show(sub_id, sample, r.json())
                self.serving.stopping.wait(POLL_SECONDS)

    def _show(self, sub_id: str, sample: Sample, sub: dict) -> None:
        if sub["status"] in TERMINAL:
            self.verdicts.append(outcome(sample, sub))
            say(self.verdicts[-1])
            del self.pending[sub_id]
            return
        status, message, now = sub["status"], sub["progress"]["message"], time.monotonic()
        last = self.shown.get(sub_id)
        if last is None or status != last[0] or (message != last[1] and now - last[2] >= REPEAT_SECONDS):
            say(f"examples/{sample.file}: {status} {sub['progress']['percent']:.0f}%" + (f": {message}" if message else ""))
            self.shown[sub_id] = (status, message, now)


def outcome(sample: Sample, sub: dict) -> str:
    where = f"examples/{sample.file}"
    if sub["status"] == SubmissionStatus.DONE:
        decision = sub.get("decision")
        verdict = "as expected" if sample.as_expected(decision) else f"NOT as expected: {sample.expected}"
        return f"{where}: {str(decision).upper()} ({verdict})"
    return f"{where}: {sub['status']}: {(sub.get('error') or {}).get('message') or sub['progress']['message']}"


# --------------------------------------------------------------------------------------------------
# --no-serve: in this process
# --------------------------------------------------------------------------------------------------


def check_samples_in_process() -> int:
    from ftgate.cli import main as cli_main

    if cli_main(["bootstrap"]) != 0:
        return EXIT["error"]
    outcome_of = {code: outcome for outcome, code in EXIT.items()}
    for sample in IN_PROCESS_SAMPLES:
        print(f"\n=== ftgate check examples/{sample.file} (expected: {sample.expected}) ===", flush=True)
        code = cli_main(["check", str(EXAMPLES / sample.file)])
        print(f"=== exit code {code}: {outcome_of.get(code)} ===", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftgate demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--no-serve", action="store_true",
                   help="no service: build the guarded base and check two samples in this process")
    p.add_argument("--host", default=None, help="as ftgate serve: default FTGATE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="as ftgate serve: default FTGATE_PORT or 8000")
    p.add_argument("--data-dir", default=None, help="as ftgate serve: default FTGATE_DATA_DIR or ./var")
    # warning, not serve's info: at info uvicorn logs every request, and the demo polls its samples every 2 s
    p.add_argument("--log-level", default="warning", help="the service's log level (default: warning)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_serve:
        return check_samples_in_process()
    from api.serve import build_parser as serve_parser
    from api.serve import serve

    serve_argv = ["--log-level", args.log_level]
    for option, value in (("--host", args.host), ("--port", args.port), ("--data-dir", args.data_dir)):
        if value is not None:
            serve_argv += [option, str(value)]
    return serve(serve_parser().parse_args(serve_argv), companion=check_samples_through_service)


if __name__ == "__main__":
    sys.exit(main())
