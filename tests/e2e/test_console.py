"""The web console in a real browser against real API, scheduler and worker processes."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.e2e.browser import browser, log_in, new_page, screenshot
from tests.e2e.llm_support import FakeLlm
from tests.e2e.stack import ADMIN_EMAIL, ADMIN_PASSWORD, Stack, wait_until

pytestmark = pytest.mark.e2e
__all__ = ("browser",)


def _llm_worker(stack: Stack) -> FakeLlm:
    stack.create_admin()
    fake = FakeLlm(stack)
    agent_id, token = stack.create_agent(capabilities=["llm"], concurrency=4, name="llm-worker")
    stack.start_worker(agent_id, token, **fake.worker_env())
    return fake


def _status(page: Any) -> str:
    return str(page.locator(".heading").get_attribute("data-status"))


def test_root_redirects_and_the_page_is_locked_down(stack: Stack, browser: Any) -> None:
    page = new_page(browser, stack.api_url)
    response = page.goto("/")
    assert page.url.endswith("/console")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'self'" in csp
    page.get_by_role("button", name="Log in").wait_for()
    assert page.js_errors == []


def test_log_in_submit_watch_the_stream_to_done_and_cancel(stack: Stack, browser: Any) -> None:
    fake = _llm_worker(stack)
    words = [f"word{i} " for i in range(40)]
    fake.script("stream", {"tokens": words, "token_delay_ms": 60})
    page = new_page(browser, stack.api_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)

    # Submit from the console and follow the task on its page.
    page.get_by_role("link", name="Submit a task").click()
    page.get_by_label("Type").fill("llm.chat")
    page.get_by_label("Input (JSON)").fill('{"messages": [{"role": "user", "content": "hi"}], "model": "stream"}')
    page.get_by_label("Capabilities (comma separated)").fill("llm")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/console#/task/*")
    output = page.get_by_label("Streamed output")
    # The text appears piece by piece while the task runs, before it is done.
    wait_until(
        lambda: "word5" in output.text_content() and _status(page) not in ("done", "failed", "canceled"),
        timeout_s=30,
        what="partial stream",
    )
    partial = output.text_content()
    assert partial != "".join(words)
    screenshot(page, "task")
    wait_until(lambda: _status(page) == "done", timeout_s=60, what="done")
    assert output.text_content() == "".join(words)
    page.locator("pre.result").filter(has_text="word39").wait_for()
    timeline = str(page.locator("ol.timeline").text_content())
    for status in ("queued", "assigned", "running", "done"):
        assert status in timeline

    # Retry: a new task with the same type and input, followed the same way.
    first_url = page.url
    page.get_by_role("button", name="Retry as a new task").click()
    page.get_by_role("heading", name="Retry a task").wait_for()
    assert page.get_by_label("Type").input_value() == "llm.chat"
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(lambda url: "#/task/" in url and url != first_url)
    wait_until(lambda: _status(page) == "done", timeout_s=60, what="the retried task done")
    assert output.text_content() == "".join(words)

    # A slow one, canceled from its page.
    fake.script("slow", {"tokens": [f"t{i} " for i in range(300)], "token_delay_ms": 100})
    task_id = stack.submit(
        stack.create_admin(),
        type="llm.chat",
        input={"messages": [{"role": "user", "content": "hi"}], "model": "slow"},
        capabilities=["llm"],
    )["id"]
    page.goto(f"/console#/task/{task_id}")
    wait_until(lambda: "t3" in output.text_content(), timeout_s=30, what="slow stream")
    page.get_by_role("button", name="Cancel").click()
    wait_until(lambda: _status(page) == "canceled", timeout_s=30, what="canceled")
    assert stack.task(stack.create_admin(), task_id)["status"] == "canceled"
    assert page.js_errors == []


def test_the_task_table_follows_status_changes_live(stack: Stack, browser: Any) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(name="builtin")
    stack.start_worker(agent_id, token)
    page = new_page(browser, stack.api_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.locator("table[aria-label=Tasks]").wait_for()
    task_id = stack.submit(admin, type="sleep", input={"seconds": 2})["id"]
    row = page.locator(f"tr[data-task-id='{task_id}']")
    row.wait_for()  # a new task shows up without a reload
    row.locator(".status-running").wait_for()
    row.locator(".status-done").wait_for()
    # Filtering by status keeps only matching rows.
    page.get_by_label("Status").select_option("failed")
    page.wait_for_url("**status=failed")
    page.get_by_text("No tasks.").wait_for()

    # Paging and the type filter.
    stack.submit_batch(admin, [{"type": "noop", "capabilities": ["nobody"]} for _ in range(21)])
    page.goto("/console#/tasks")
    page.get_by_text("Page 1 of 2 (22 tasks)").wait_for()
    screenshot(page, "tasks")
    page.get_by_role("button", name="Next").click()
    page.wait_for_url("**page=2")
    page.get_by_text("Page 2 of 2 (22 tasks)").wait_for()
    assert page.locator("tr[data-task-id]").count() == 2
    page.get_by_label("Type").fill("sleep")
    page.get_by_role("button", name="Filter").click()
    page.get_by_text("Page 1 of 1 (1 tasks)").wait_for()
    assert page.locator(f"tr[data-task-id='{task_id}']").count() == 1
    assert page.js_errors == []


def test_agents_go_online_and_offline_live_and_admins_manage_them(stack: Stack, browser: Any) -> None:
    stack.create_admin()
    page = new_page(browser, stack.api_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.get_by_role("link", name="Agents").click()
    page.get_by_text("Create an agent").click()
    page.get_by_label("Name").fill("console-made")
    page.get_by_label("Capabilities").fill("gpu, llm")
    page.get_by_label("Concurrency").fill("3")
    page.get_by_role("button", name="Create agent").click()
    token = str(page.locator("code.token").text_content())
    assert len(token) >= 32
    page.get_by_role("button", name="I stored it").click()
    assert page.locator("code.token").count() == 0
    row = page.locator("tr", has_text="console-made")
    agent_id = str(row.get_attribute("data-agent-id"))
    assert row.get_attribute("data-online") == "false"

    worker = stack.start_worker(agent_id, token, concurrency=3)
    row.locator(".online").wait_for(timeout=60_000)
    assert "0 / 3" in str(row.locator(".load-cell").text_content())
    assert row.locator(".seen-cell").text_content() != "-"
    screenshot(page, "agents")
    stack.kill(worker, signal.SIGKILL)
    # A plain disconnect shows once the presence lease runs out (plus one presence poll).
    row.locator(".offline").wait_for(timeout=60_000)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Rotate token").click()
    rotated = str(page.locator("code.token").text_content())
    assert len(rotated) >= 32
    assert rotated != token
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")
    with stack.http(stack.create_admin()) as client:
        assert client.get(f"/api/agents/{agent_id}").status_code == 404
    assert page.js_errors == []


def test_a_user_never_sees_another_users_tasks(stack: Stack, browser: Any) -> None:
    alice = stack.register_user("alice@example.com")
    stack.register_user("bob@example.com")
    hidden = stack.submit(alice, type="noop", input={"secret": "alice-only"}, capabilities=["nobody"])["id"]
    page = new_page(browser, stack.api_url)
    log_in(page, "bob@example.com", "user-password-123")
    page.get_by_text("No tasks.").wait_for()
    # Alice's task changing while Bob watches reaches neither his table nor his socket.
    with stack.http(alice) as client:
        assert client.post(f"/api/tasks/{hidden}/cancel").status_code == 200
    page.goto(f"/console#/task/{hidden}")
    page.get_by_text("No such task.").wait_for()
    page.goto("/console#/tasks")
    page.get_by_text("No tasks.").wait_for()
    assert "alice-only" not in page.content()
    assert page.locator(f"tr[data-task-id='{hidden}']").count() == 0
    # Bob is not an admin: no queues link, and the admin endpoint refuses him.
    assert page.get_by_role("link", name="Queues").count() == 0


def test_queues_page_shows_depth_by_priority_and_route(stack: Stack, browser: Any) -> None:
    admin = stack.create_admin()
    page = new_page(browser, stack.api_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.get_by_role("link", name="Queues").click()
    page.get_by_text("Nothing queued.").wait_for()
    for priority in (2, 7, 7):
        stack.submit(admin, type="echo", priority=priority, capabilities=["gpu"])
    # No reload: the page re-reads the numbers when task events arrive on /ws.
    page.locator("td[data-priority='7']", has_text="2").wait_for()
    assert page.locator("td[data-priority='2']").text_content() == "1"
    route = page.locator("table[aria-label='Queued tasks by route'] tr", has_text="gpu")
    assert "p7: 2" in str(route.text_content())
    page.get_by_text("3 queued").wait_for()
    # The oldest task's waiting time keeps growing between reloads.
    age_cell = route.locator("td.age")
    first_age = age_cell.text_content()
    wait_until(lambda: age_cell.text_content() != first_age, timeout_s=10, what="the waiting time to advance")
    screenshot(page, "queues")
    assert page.js_errors == []


def test_planner_pages_plan_from_text_and_stream_the_reply(stack: Stack, browser: Any) -> None:
    import asyncio

    from tests.e2e.planner_agent import Answer, PlannerAgent

    admin = stack.create_admin()
    stack.register_user("planner@example.com")
    reply = ["Reading ", "the papers ", "comes first; ", "start today."]

    async def handle(submit: Any, io: Any) -> Any:
        if submit.type == "planner.from_text":
            steps = [{"title": "Read ten papers", "detail": "", "estimateMinutes": 240}, {"title": "Write a draft"}]
            return Answer(
                output={
                    "title": "The AIGC paper",
                    "description": "from the console",
                    "priority": "high",
                    "steps": steps,
                }
            )
        for piece in reply:
            await io.piece(piece)
            await asyncio.sleep(0.6)
        return Answer(output={"agentName": "executor", "content": "".join(reply), "patches": []})

    agent_id, token = stack.create_agent(capabilities=["llm"], name="planner-agent")
    with stack.http(admin) as client:
        assert client.put(f"/api/agents/{agent_id}", json={"trusted": True}).status_code == 200
    agent = PlannerAgent(stack.api_url, agent_id, token, handle).start()
    try:
        page = new_page(browser, stack.api_url)
        log_in(page, "planner@example.com", "user-password-123")
        page.get_by_role("link", name="Planner").click()
        page.get_by_label("Text to plan").fill("Write the AIGC paper: read ten papers, then write a draft")
        page.get_by_role("button", name="Make a plan").click()
        page.wait_for_url("**#/planner/task/*")
        page.get_by_role("heading", name="The AIGC paper").wait_for()
        page.get_by_text("Read ten papers").wait_for()

        page.get_by_label("Message", exact=True).fill("What should I do first?")
        page.get_by_role("button", name="Send").click()
        # The answer appears piece by piece while the request is still waiting.
        writing = page.locator(".msg.assistant", has_text="agent (writing...)")
        writing.filter(has_text="the papers").wait_for()
        assert "start today." not in str(writing.text_content())
        page.locator(".msg.assistant", has_text="executor").filter(has_text="start today.").wait_for()
        screenshot(page, "planner")

        page.get_by_role("link", name="LLM settings").click()
        page.get_by_text("No settings").wait_for()
        page.get_by_label("Model").fill("my-model")
        page.get_by_label("API key (write-only; leave empty to keep the stored one)").fill("sk-console-secret")
        page.get_by_role("button", name="Save").click()
        page.get_by_role("alert").filter(has_text="baseUrl is required the first time").wait_for()
        page.get_by_label("Base URL").fill("https://8.8.8.8/v1")
        page.get_by_role("button", name="Save").click()
        page.get_by_text("An API key is stored.").wait_for()
        assert page.get_by_label("API key (write-only; leave empty to keep the stored one)").input_value() == ""
        assert "sk-console-secret" not in page.content()
        assert page.js_errors == []
    finally:
        agent.stop()


def test_a_revoked_session_returns_the_page_to_the_login_form(stack: Stack, browser: Any) -> None:
    stack.create_admin()
    page = new_page(browser, stack.api_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.locator("table[aria-label=Tasks]").wait_for()
    saved = page.evaluate("JSON.parse(sessionStorage.getItem('taskyard.console.session'))")
    assert set(saved) >= {"accessToken", "refreshToken"}
    # Logging this session out elsewhere revokes both tokens: the socket is closed (1008), the refresh
    # is refused, and the page goes back to the login form with its storage cleared.
    with stack.http(saved["accessToken"]) as client:
        assert client.post("/api/auth/logout", json={"refreshToken": saved["refreshToken"]}).status_code == 200
    page.get_by_role("button", name="Log in").wait_for(timeout=60_000)
    assert page.evaluate("sessionStorage.getItem('taskyard.console.session')") is None
    assert page.js_errors == []
