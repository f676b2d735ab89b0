"""The dashboard end to end: Debian's chromium, driven by Playwright, against a real server, the
real Redis and a real worker. Keeps a screenshot in artifacts/dashboard.png."""
from __future__ import annotations

import os
import shutil

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.apps.basic import add
from tests.conftest import ROOT, wait_for
from tests.test_dlq import dead_task
from tests.web_server import serve

ADD = "tests.apps.basic.add"
FAIL = "tests.apps.basic.fail"
TOKEN = "dashboard-token-0123456789"
CHROMIUM = os.environ.get("FASTQ_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install -y chromium (CI's .ci/run does), "
                    "or point FASTQ_TEST_CHROMIUM at a Chromium binary")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_dashboard_shows_tasks_live_and_requeues_a_dead_letter(app, r, monkeypatch, browser,
                                                                  start_worker):
    monkeypatch.setattr(app.conf, "web_token", TOKEN)
    worker = start_worker(concurrency=1)
    dead_id, dead_entry = dead_task(r, "default", ADD, (40, 2))
    with serve(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(url + "/")
        expect(page.locator("#status")).to_contain_text("live")
        expect(page.locator("#workers")).to_contain_text(worker.name)
        page.fill("#token", TOKEN)
        page.click("#save-token")

        sent = httpx.post(url + "/api/tasks", json={"name": ADD, "args": [2, 3]},
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()["id"]
        task_row = page.locator(f'#recent tr[data-id="{sent}"]')
        expect(task_row).to_be_visible()
        expect(task_row.locator(".state")).to_have_text("SUCCESS")
        expect(task_row).to_contain_text("5")

        httpx.post(url + "/api/tasks", json={"name": ADD, "args": [1, 1], "queue": "unserved",
                                             "priority": "high"},
                   headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
        waiting = page.locator('#queues tr[data-queue="unserved"]')
        expect(waiting.locator('[data-priority="high"]')).to_have_text("1 (0)")
        expect(waiting.locator('[data-priority="normal"]')).to_have_text("·")

        # a workflow whose first step waits in "unserved"
        (add.s(1, 2).set(queue="unserved") | add.s(3)).apply_async()
        graphs = app.broker.running_graphs()
        assert len(graphs) == 1
        expect(page.locator("#workflows li")).to_have_text(graphs)

        failed = httpx.post(url + "/api/tasks", json={"name": FAIL, "args": ["KeyError", "gone"]},
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()["id"]
        failed_row = page.locator(f'#recent tr[data-id="{failed}"]')
        expect(failed_row.locator(".state")).to_have_text("FAILURE")
        expect(failed_row.locator("pre")).to_contain_text("KeyError")

        dead_row = page.locator(f'#dlq tr[data-entry="{dead_entry}"]')
        expect(dead_row).to_contain_text("unknown task")
        dead_row.locator("button.requeue").click()
        expect(page.locator("#message")).to_have_text("requeued 1 dead letter(s)")
        expect(dead_row).to_have_count(0)
        wait_for(lambda: httpx.get(f"{url}/api/tasks/{dead_id}").json()["result"] == 42,
                 message="the requeued task to run")
        expect(page.locator("#dlq-total")).to_have_text("(0)")

        (ROOT / "artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "artifacts" / "dashboard.png"), full_page=True)
