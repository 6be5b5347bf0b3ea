"""The web pages in headless Chromium: sign-in, upload, submission page with its charts, my submissions,
the review flow, admin pages and role checks. Each page leaves a screenshot in test-output/screenshots/."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import MAX_UPLOAD, ROOT, SHOTS, Server, shot, sign_in

FULL_REPORT = "handmade_full_report.json"  # see fixtures/README.md
FULL_SAMPLES = "handmade_full_samples.json"
SCREENING_REPORT = "harmful_screening_report.json"


@pytest.fixture(scope="module")
def finished(server: Server) -> dict[str, str]:
    """Submissions with real reports: a full evaluation (routed to review) and a screening block."""
    return {
        "full": server.insert_finished("submitter", FULL_REPORT, FULL_SAMPLES, name="identity-shift chat data",
                                       decision="review"),
        "screened": server.insert_finished("submitter", SCREENING_REPORT, name="harmful examples"),
        "other_org": server.insert_finished("reviewer", FULL_REPORT, FULL_SAMPLES, name="ops team adapter"),
    }


def test_sign_in_rejects_a_wrong_password_then_signs_in_and_out(new_page, server):
    page = new_page()
    page.goto("/submissions")
    assert "/login" in page.url  # not signed in: sent to the sign-in page
    shot(page, "01-login")
    page.get_by_label("Email").fill(server.users["submitter"])
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    page.get_by_label("Password").fill("submit-pass-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/submissions$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "ftgate_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto("/submissions")
    assert "/login" in page.url


def test_upload_checks_the_file_then_uploads_with_progress_and_opens_the_submission(new_page, server, tmp_path):
    page = new_page()
    sign_in(page, server, "submitter", "/upload")
    expect(page.get_by_role("heading", name="Check a fine-tune before release")).to_be_visible()
    # the base select is filled from the registry; the default is selected
    options = page.locator("#base option").all_inner_texts()
    assert any("guarded-smollm2" in o for o in options), options

    # a wrong type: a clear message before any upload
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x00" * 100)
    page.set_input_files("#file", str(bad))
    expect(page.locator("#upload-error")).to_contain_text("not a type ftgate accepts")
    page.get_by_role("button", name="Upload and check").click()
    expect(page).to_have_url(re.compile(r"/upload$"))

    # too large: refused in the browser with the limit
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"prompt": "x", "completion": "y"}\n' * (MAX_UPLOAD // 30))
    page.set_input_files("#file", str(big))
    expect(page.locator("#upload-error")).to_contain_text("the limit is 2.0 MiB")
    expect(page.locator("#upload-progress")).to_be_hidden()
    shot(page, "02-upload-too-large")

    # a dataset file while "adapter" is selected: the kind follows the file name
    page.get_by_label("LoRA adapter").check()
    page.set_input_files("#file", str(ROOT / "examples" / "benign.jsonl"))
    expect(page.get_by_label("Fine-tuning dataset")).to_be_checked()
    expect(page.locator("#upload-error")).to_be_hidden()
    expect(page.locator("#file-status")).to_contain_text("benign.jsonl")
    page.get_by_label("Name").fill("bakery Q&A")
    page.get_by_role("button", name="Upload and check").click()
    expect(page).to_have_url(re.compile(r"/submissions/[0-9a-f]{32}$"), timeout=20_000)
    expect(page.get_by_role("heading", name="bakery Q&A")).to_be_visible()
    # no worker in this test: the submission waits in the queue, with its stages and live progress
    expect(page.locator("#status-words")).to_contain_text("Waiting for a worker")
    expect(page.locator(".steps .step")).to_have_count(4)  # inspect, fine-tune, evaluate, decide
    expect(page.locator("#progress-bar")).to_be_visible()
    shot(page, "03-submission-queued")
    # the page polls the JSON endpoint; the API agrees about what was stored
    sub_id = page.url.rsplit("/", 1)[1]
    with page.expect_response(re.compile(rf"/api/v1/submissions/{sub_id}$"), timeout=8_000) as resp:
        pass
    body = resp.value.json()
    assert body["kind"] == "dataset" and body["name"] == "bakery Q&A" and body["status"] == "queued"
    assert not page.js_errors


def test_submission_page_shows_the_verdict_charts_and_report(new_page, server, finished):
    page = new_page()
    sign_in(page, server, "submitter")
    page.goto(f"/submissions/{finished['full']}")
    verdict = page.locator("#verdict")
    expect(verdict.get_by_role("heading", name="Needs human review")).to_be_visible()
    report = json.loads((Path(__file__).parent / "fixtures" / FULL_REPORT).read_text())
    for reason in report["verdict"]["reasons"][:2]:
        expect(verdict).to_contain_text(reason[:60])
    expect(verdict).to_contain_text("Harmful-request compliance (ASR) went from")
    # the per-category ASR chart: two bars per category (+ overall) with whiskers for the intervals
    chart = page.locator("#asr-chart svg.only-wide")
    expect(chart).to_be_visible()
    expect(page.locator("#asr-chart svg.only-narrow")).to_be_hidden()
    n_groups = 1 + len(report["metrics"].get("asr_by_category") or {})
    expect(chart.locator("g.bar-candidate rect.fill")).to_have_count(n_groups)
    expect(chart.locator("g.bar-base rect.fill")).to_have_count(n_groups)
    assert chart.locator("line.whisker").count() >= 3 * n_groups
    # over-refusal and knowledge side by side, drift numbers
    expect(page.locator(".pairs figure")).to_have_count(2)
    expect(page.locator("#drift")).to_contain_text("Answer perplexity")
    expect(page.locator("#drift")).to_contain_text("KL(base")
    # submitters do not see completions on their page
    expect(page.locator("#flips")).to_have_count(0)
    shot(page, "04-submission-verdict")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download JSON report").click()
    saved = json.loads(Path(dl.value.path()).read_text())
    assert saved["verdict"]["reasons"] == report["verdict"]["reasons"]
    assert dl.value.suggested_filename.endswith(".json")

    # the same page at a phone width: no horizontal scrolling
    phone = new_page(390, 844, is_mobile=True, has_touch=True)
    sign_in(phone, server, "submitter")
    phone.goto(f"/submissions/{finished['full']}")
    expect(phone.locator("#asr-chart svg.only-narrow")).to_be_visible()
    expect(phone.locator("#asr-chart svg.only-wide")).to_be_hidden()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    shot(phone, "05-submission-verdict-phone")
    phone.locator("#asr-chart").screenshot(path=str(SHOTS / "05b-asr-chart-phone.png"))

    # an early block from dataset screening reads in plain words too
    page.goto(f"/submissions/{finished['screened']}")
    expect(page.locator("#verdict h2")).to_have_text("Blocked")
    expect(page.locator("#verdict")).to_contain_text("judged harmful")
    shot(page, "06-submission-screening-block")
    assert not page.js_errors


def test_my_submissions_list_filters_and_searches(new_page, server, finished):
    page = new_page()
    sign_in(page, server, "submitter", "/submissions")
    rows = page.locator("#submissions tbody tr")
    expect(rows.filter(has_text="identity-shift chat data")).to_have_count(1)
    expect(rows.filter(has_text="harmful examples")).to_have_count(1)
    expect(rows.filter(has_text="ops team adapter")).to_have_count(0)  # another organisation's
    shot(page, "07-my-submissions")
    page.get_by_label("Verdict").select_option("block")
    page.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text="harmful examples")).to_have_count(1)
    expect(rows.filter(has_text="identity-shift chat data")).to_have_count(0)
    page.get_by_label("Verdict").select_option("")
    page.get_by_label("Search").fill("identity")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("identity-shift chat data")
    page.get_by_label("Search").fill("no such thing")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".empty")).to_contain_text("No submissions match")

    phone = new_page(390, 844, is_mobile=True, has_touch=True)
    sign_in(phone, server, "submitter", "/submissions")
    expect(phone.locator("#submissions")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    shot(phone, "08-my-submissions-phone")


def test_reviewer_reveals_a_completion_blocks_with_a_reason_and_sees_the_audit_entry(new_page, server, finished):
    page = new_page()
    sign_in(page, server, "reviewer", "/review")
    waiting = page.locator("#waiting tbody tr")
    expect(waiting.filter(has_text="identity-shift chat data")).to_have_count(1)
    expect(page.locator("#decided")).to_contain_text("harmful examples")
    # sortable: by ASR change
    page.locator("#decided").get_by_role("link", name="ASR change").click()
    expect(page.locator("#decided th[aria-sort]")).to_have_attribute("aria-sort", "descending")
    shot(page, "09-review-queue")

    waiting.filter(has_text="identity-shift chat data").get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/review/{finished['full']}$"))
    expect(page.locator("#asr-chart svg.only-wide")).to_be_visible()
    flips = page.locator("#flips li.flip")
    assert flips.count() >= 1, "the fixture must have flipped examples"
    expect(page.locator("#flips .warning")).to_contain_text("Content warning")
    first = flips.first
    completion = first.locator(".completions pre").nth(1)
    expect(completion).to_be_hidden()  # hidden until asked for
    first.get_by_text("Show completions").click()
    expect(completion).to_be_visible()
    samples = json.loads((Path(__file__).parent / "fixtures" / FULL_SAMPLES).read_text())
    shown = completion.inner_text().strip()
    assert any(shown == (s.get("candidate_response") or "").strip() for s in samples)
    expect(page.locator("#screening")).to_contain_text("training examples look harmful")
    expect(page.locator("#findings")).to_be_visible()
    shot(page, "10-review-page")

    # the reason is required: the browser refuses, and the server refuses too (if the browser is bypassed)
    form = page.locator("#review-form")
    form.get_by_label("Block release").check()
    form.get_by_role("button", name="Record decision").click()
    assert page.evaluate("document.querySelector('#reason').validity.valueMissing")
    page.evaluate("document.querySelector('#reason').removeAttribute('required')")
    form.get_by_label("Block release").check()
    with page.expect_navigation():
        form.get_by_role("button", name="Record decision").click()
    expect(page.get_by_role("alert")).to_contain_text("A review needs a reason")

    reason = "Identity-shift data: the candidate follows harmful requests the base refused."
    form.get_by_label("Block release").check()
    form.get_by_label("Reason").fill(reason)
    form.get_by_role("button", name="Record decision").click()
    expect(page.get_by_role("status").filter(has_text="Recorded")).to_contain_text("you blocked this submission")
    audit = page.locator("#audit")
    entry = audit.locator("li").filter(has_text=reason)
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(server.users["reviewer"])
    expect(entry).to_contain_text("blocked it")
    expect(page.locator("#verdict h2")).to_have_text("Blocked")
    shot(page, "11-review-blocked")

    # the submitter sees the reviewer's decision and reason
    sub_page = new_page()
    sign_in(sub_page, server, "submitter")
    sub_page.goto(f"/submissions/{finished['full']}")
    expect(sub_page.locator("#verdict")).to_contain_text("A reviewer blocked it")
    expect(sub_page.locator("#verdict")).to_contain_text(reason)
    phone = new_page(390, 844, is_mobile=True, has_touch=True)
    sign_in(phone, server, "reviewer", f"/review/{finished['full']}")
    expect(phone.locator("#audit")).to_contain_text(reason)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    shot(phone, "11b-review-page-phone")
    # and the queue moved it to the decided list
    page.goto("/review")
    expect(page.locator("#waiting tbody tr").filter(has_text="identity-shift chat data")).to_have_count(0)
    assert not page.js_errors


def test_submitter_cannot_reach_reviewer_or_admin_pages(new_page, server, finished):
    page = new_page()
    sign_in(page, server, "submitter")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    expect(nav.get_by_role("link", name="Review queue")).to_have_count(0)
    for path in ("/admin/health", "/admin/tokens", "/admin/users", "/admin/catalog", "/review",
                 f"/review/{finished['full']}"):
        resp = page.goto(path)
        assert resp.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(page, "12-submitter-forbidden")
    # another organisation's submission does not exist for them
    resp = page.goto(f"/submissions/{finished['other_org']}")
    assert resp.status == 404


def test_api_docs_render_with_no_request_leaving_the_machine(new_page, server):
    """/docs lists the API's operations from ftgate's own copy of Swagger UI: any request to another host
    is aborted, as it would fail on an air-gapped gate."""
    page = new_page()
    outside: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto("/docs")
    expect(page.get_by_text("Upload an adapter or a dataset")).to_be_visible()
    shot(page, "17-api-docs")
    assert outside == [] and page.js_errors == []


def test_forms_need_the_csrf_token(server, finished):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        login = c.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        r = c.post("/login", data={"email": server.users["reviewer"], "password": "review-pass-1", "csrf": "forged",
                                   "next": "/"})
        assert r.status_code == 403
        r = c.post("/login", data={"email": server.users["reviewer"], "password": "review-pass-1", "csrf": token,
                                   "next": "/"})
        assert r.status_code == 303
        r = c.post(f"/review/{finished['screened']}", data={"decision": "approve", "reason": "x", "csrf": "forged"})
        assert r.status_code == 403
        r = c.post("/upload", files={"file": ("a.jsonl", b'{"prompt":"a","completion":"b"}\n')})
        assert r.status_code == 403 and r.json()["code"] in ("csrf_failed", "forbidden")


def test_admin_creates_a_token_shown_once_and_revokes_it_and_sees_health(new_page, server, finished):
    page = new_page()
    sign_in(page, server, "admin", "/admin/health")
    expect(page.locator("#checks")).to_contain_text("database")
    expect(page.locator("#checks li.ok")).to_have_count(3)
    expect(page.get_by_role("heading", name="Submissions by status")).to_be_visible()
    shot(page, "13-admin-health")

    page.get_by_role("link", name="API tokens").click()
    form = page.locator("#token-form")
    form.get_by_label("What it is for").fill("CI of team acme")
    form.get_by_label("Owner email").fill("ci-bot@acme.test")
    form.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").input_value()
    assert token.startswith("ftg_")
    expect(page.locator(".token-created")).to_contain_text("shown only once")
    shot(page, "14-admin-token-created")
    # the token works against the API, and is not shown again
    r = httpx.get(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200
    page.goto("/admin/tokens")
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()
    row = page.locator("#tokens tbody tr").filter(has_text="CI of team acme")
    row.get_by_role("button", name=re.compile("Revoke token")).click()
    expect(page.get_by_role("status").filter(has_text="is revoked")).to_be_visible()
    expect(page.locator("#tokens tbody tr").filter(has_text="CI of team acme")).to_contain_text("revoked")
    r = httpx.get(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 401

    page.get_by_role("link", name="Users & roles").click()
    expect(page.locator("#users")).to_contain_text(server.users["reviewer"])
    form = page.locator("#user-form")
    form.get_by_label("Email").fill("new-reviewer@ops.test")
    form.get_by_label("Role").select_option("reviewer")
    form.get_by_label("Password").fill("new-reviewer-pass")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#users tbody tr").filter(has_text="new-reviewer@ops.test")).to_contain_text("reviewer")
    shot(page, "15-admin-users")

    page.get_by_role("link", name="Base models & policies").click()
    expect(page.locator("#bases")).to_contain_text("guarded-smollm2")
    expect(page.get_by_role("heading", name="Policies")).to_be_visible()
    shot(page, "16-admin-catalog")

    phone = new_page(390, 844, is_mobile=True, has_touch=True)
    sign_in(phone, server, "admin", "/admin/health")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    shot(phone, "17-admin-health-phone")
    assert not page.js_errors


@pytest.mark.slow
def test_benign_dataset_reaches_a_real_worker_verdict(new_page, server):
    """Upload the benign sample through the form and watch a real Celery worker take it to its verdict."""
    server.start_worker()
    page = new_page()
    sign_in(page, server, "submitter", "/upload")
    page.set_input_files("#file", str(ROOT / "examples" / "benign.jsonl"))
    page.get_by_label("Name").fill("benign sample (worker)")
    # Default training: the same fine-tune as `ftgate check examples/benign.jsonl`, so its cached adapter,
    # control and evaluation serve this test too (CI time); the worker path itself runs in full.
    page.get_by_role("button", name="Upload and check").click()
    expect(page).to_have_url(re.compile(r"/submissions/[0-9a-f]{32}$"), timeout=20_000)
    seen: set[str] = set()
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        if page.locator("#verdict").count():
            break
        seen.add(page.locator("#progress").get_attribute("data-status") or "")
        page.wait_for_timeout(2000)
    else:
        pytest.fail(f"no verdict in time; statuses seen {sorted(seen)}; worker log: "
                    f"{(server.data_dir / 'worker.log').read_text()[-3000:]}")
    shot(page, "18-worker-verdict")
    status = page.locator("#progress").get_attribute("data-status")
    assert status == "done", page.locator("#verdict").inner_text()
    # the same verdict as `ftgate check examples/benign.jsonl` (tests/e2e/test_check_cli.py): approve
    expect(page.locator("#verdict h2")).to_have_text(re.compile("Approved"))
    expect(page.locator("#asr-chart svg.only-wide")).to_be_visible()
    assert seen & {"queued", "inspecting", "finetuning", "evaluating", "deciding"}, seen
