"""`ftgate submit FILE --server URL --token T --wait`: upload to a running ftgate, show progress, print the
verdict and exit with the codes of `ftgate check`: 0 approve, 1 block, 2 review, 3 rejected, 4 error.
`--junit report.xml` writes a JUnit file for CI systems."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO
from xml.etree import ElementTree as ET

import httpx

from ftgate.cli import EXIT, render_repair  # shared with `ftgate check`: exit codes, the repair's lines
from ftgate.status import TERMINAL, Decision, SubmissionStatus

API = "/api/v1"


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT["error"]):
        super().__init__(message)
        self.exit_code = exit_code


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
        msg = f"{body.get('code', r.status_code)}: {body.get('message', r.text)}"
        if body.get("field"):
            msg += f" (field {body['field']})"
        return msg
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:300]}"


def _check(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        # the server refused the input itself (too large, wrong type, bad field): like a rejected artifact
        code = EXIT["rejected"] if r.status_code in (413, 415, 422) else EXIT["error"]
        raise ClientError(f"server answered {r.status_code} {_error_message(r)}", code)
    return r.json()


def _retry_after(r: httpx.Response) -> float | None:
    """The seconds a 429 asks to wait before trying again (None for any other answer)."""
    if r.status_code != 429:
        return None
    try:
        return max(0.0, float(r.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _verdict_known(sub: dict) -> bool:
    """Done, or decided and now only making a repaired adapter nobody asked for (the policy's own setting)."""
    status = sub.get("status")
    return status == SubmissionStatus.DONE or (status == SubmissionStatus.REPAIRING and not sub.get("repair_requested"))


def exit_code_of(sub: dict) -> int:
    status = sub.get("status")
    if _verdict_known(sub):
        repair = sub.get("repair") or {}
        # auto: the repaired adapter is released when its own verdict approves, so the exit code is its verdict
        decision = repair.get("decision") if repair.get("released") else sub.get("decision")
        return EXIT.get(decision or "", EXIT["error"])
    if status == SubmissionStatus.REJECTED:
        return EXIT["rejected"]
    return EXIT["error"]


def write_junit(path: Path, sub: dict, report: dict | None, elapsed: float) -> None:
    name = sub.get("name") or sub.get("filename") or sub.get("id", "submission")
    suite = ET.Element("testsuite", name="ftgate", tests="1", time=f"{elapsed:.1f}")
    case = ET.SubElement(suite, "testcase", classname=f"ftgate.{sub.get('kind', 'artifact')}", name=str(name),
                         time=f"{elapsed:.1f}")
    status, decision = (SubmissionStatus.DONE if _verdict_known(sub) else sub.get("status")), sub.get("decision")
    reasons = (report or {}).get("verdict", {}).get("reasons") or (sub.get("verdict") or {}).get("reasons") or []
    text = "\n".join(str(r) for r in reasons)
    url_line = f"submission {sub.get('id')} ({sub.get('links', {}).get('self', '')})"
    failures = 0
    errors = 0
    if status == SubmissionStatus.DONE and decision == Decision.BLOCK:
        ET.SubElement(case, "failure", type="block", message="ftgate blocked this release").text = text
        failures = 1
    elif status == SubmissionStatus.DONE and decision == Decision.REVIEW:
        ET.SubElement(case, "failure", type="review", message="ftgate needs a human review").text = text
        failures = 1
    elif status != SubmissionStatus.DONE or decision != Decision.APPROVE:
        err = sub.get("error") or {}
        ET.SubElement(case, "error", type=str(status), message=str(err.get("message") or status)).text = url_line
        errors = 1
    ET.SubElement(case, "system-out").text = url_line + ("\n" + text if text else "")
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _pack_directory(d: Path) -> Path:
    """A PEFT directory becomes a .zip to upload."""
    tmp = Path(tempfile.mkdtemp(prefix="ftgate-submit-"))
    return Path(shutil.make_archive(str(tmp / d.name), "zip", d))


def submit(
    file: str | Path, server: str, token: str, wait: bool = True, junit: str | Path | None = None, *,
    kind: str | None = None, base: str | None = None, policy: str | None = None, name: str | None = None,
    training: str | None = None, repair: str | None = None, timeout: float = 6 * 3600, poll: float = 2.0,
    output: str = "text",
    out: TextIO | None = None, err: TextIO | None = None, transport: httpx.BaseTransport | None = None,
) -> int:
    """Upload ``file`` and (with ``wait``) follow it to its verdict. Returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    started = time.monotonic()
    path = Path(file)
    packed = None
    sub: dict = {}
    report = None
    try:
        if not path.exists():
            raise ClientError(f"{path}: no such file or directory", EXIT["rejected"])
        if path.is_dir():
            packed = path = _pack_directory(path)
        fields = {k: v for k, v in {"kind": kind, "base": base, "policy": policy, "name": name,
                                     "training": training, "repair": repair}.items() if v}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=httpx.Timeout(60.0, read=600.0),
                          transport=transport) as http:
            while True:
                with open(path, "rb") as fh:
                    r = http.post(f"{API}/submissions", files={"file": (path.name, fh)}, data=fields)
                # Too many uploads of this user in flight (parallel CI jobs on one token): wait as told, within
                # the overall timeout, rather than fail the job.
                retry_after = _retry_after(r)
                if retry_after is None or time.monotonic() - started + retry_after > timeout:
                    break
                print(f"  (server busy: {_error_message(r)}; retrying in {retry_after:g} s)", file=err)
                time.sleep(retry_after)
            sub = _check(r)
            what = "already submitted: " if sub.get("duplicate") else "submitted: "
            print(f"{what}{sub['id']} ({sub.get('kind')}, base {sub.get('base')}, policy {sub.get('policy')})", file=err)
            last = None
            while wait and sub.get("status") not in TERMINAL and not _verdict_known(sub):
                if time.monotonic() - started > timeout:
                    raise ClientError(f"no verdict after {timeout:.0f} s; submission {sub['id']} is {sub.get('status')}")
                time.sleep(poll)
                try:
                    sub = _check(http.get(f"{API}/submissions/{sub['id']}"))
                except httpx.TransportError as e:  # the server restarts: keep waiting
                    print(f"  (server unreachable: {e}; retrying)", file=err)
                    continue
                line = f"[{sub['progress']['percent']:5.1f}%] {sub['status']}: {sub['progress']['message']}"
                if line != last:
                    print(line, file=err)
                    last = line
            if _verdict_known(sub):
                report = _check(http.get(f"{API}/submissions/{sub['id']}/report"))
    except ClientError as e:
        print(f"ftgate submit: {e}", file=err)
        code = e.exit_code
    except httpx.HTTPError as e:
        print(f"ftgate submit: cannot reach {server}: {e}", file=err)
        code = EXIT["error"]
    else:
        code = exit_code_of(sub) if (wait or sub.get("status") in TERMINAL) else 0
        _print_result(sub, report, wait, output, out)
    finally:
        if packed is not None:
            shutil.rmtree(packed.parent, ignore_errors=True)
    if junit:
        write_junit(Path(junit), sub or {"status": "error", "name": str(file),
                                         "error": {"message": "submission failed"}}, report, time.monotonic() - started)
    return code


def _print_result(sub: dict, report: dict | None, wait: bool, output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(report if report is not None else sub, out, indent=2)
        out.write("\n")
        return
    status = sub.get("status")
    if _verdict_known(sub):
        decision = sub.get("decision")
        auto = sub.get("automatic_decision")
        extra = f" (automatic: {auto}; reviewed)" if auto and auto != decision else ""
        print(f"verdict: {str(decision).upper()}{extra}", file=out)
        for reason in (report or {}).get("verdict", {}).get("reasons") or (sub.get("verdict") or {}).get("reasons") or []:
            print(f"  - {reason}", file=out)
        for line in render_repair((report or {}).get("repair"), (report or {}).get("metrics") or {},
                                  adapter_location=(sub.get("repair") or {}).get("adapter")):
            print(line, file=out)
    elif status == SubmissionStatus.REJECTED:
        print(f"rejected: {(sub.get('error') or {}).get('message')}", file=out)
    elif status in (SubmissionStatus.FAILED, SubmissionStatus.CANCELLED):
        print(f"{status}: {(sub.get('error') or {}).get('message') or sub.get('progress', {}).get('message')}", file=out)
    else:
        print(f"{sub.get('id')} {status}" + ("" if wait else "  (use --wait to follow it to its verdict)"), file=out)
    print(f"details: {sub.get('links', {}).get('self')}", file=out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ftgate submit", description=__doc__.split("\n")[0])
    p.add_argument("file", help="adapter (.zip/.tar.gz or a PEFT directory) or dataset (.jsonl/.json/.csv/.parquet)")
    p.add_argument("--server", default=os.environ.get("FTGATE_SERVER", "http://127.0.0.1:8000"),
                   help="default: FTGATE_SERVER or http://127.0.0.1:8000")
    p.add_argument("--token", default=os.environ.get("FTGATE_TOKEN", ""), help="API token (default: FTGATE_TOKEN)")
    p.add_argument("--wait", action="store_true", help="follow the submission to its verdict; exit code by verdict")
    p.add_argument("--junit", metavar="PATH", help="write a JUnit XML report")
    p.add_argument("--kind", choices=["adapter", "dataset"])
    p.add_argument("--base")
    p.add_argument("--policy")
    p.add_argument("--name")
    p.add_argument("--training", help="JSON object of fine-tuning overrides (datasets), e.g. '{\"steps\": 20}'")
    p.add_argument("--repair", nargs="?", const="offer", metavar="offer|auto|off",
                   help="after a safety block or review, also make and judge a repaired adapter (safety data mixed "
                        "into the fine-tune; offer, the default with the flag: shown beside the verdict; auto: "
                        "released when it approves); default: the policy's setting, which is also the most allowed")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the verdict")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status checks")
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: print the report")
    args = p.parse_args(argv)
    if not args.token:
        print("ftgate submit: an API token is needed (--token or FTGATE_TOKEN)", file=sys.stderr)
        return EXIT["error"]
    return submit(args.file, args.server, args.token, args.wait, args.junit, kind=args.kind, base=args.base,
                  policy=args.policy, name=args.name, training=args.training, repair=args.repair,
                  timeout=args.timeout, poll=args.poll,
                  output=args.format)


if __name__ == "__main__":
    sys.exit(main())
