"""The web page with tool calls and thinking, in a real Chromium (the fixtures of test_web.py).

The page offers no tools and asks for no thinking, so the stream comes from a tape: the scripted
provider's thinking and tool call, recorded by the real recorder, served back by ``replay/`` at
the recorded pace to the page's plain request (``match=order``). A call shows compactly as
``⚙ name({...})`` growing as its JSON streams; thinking sits in a collapsed, dimmed
``<details>``; the strict CSP still holds (test_web's fixture fails on any violation).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

import test_web
from streamchat.history import HistoryStore
from streamchat.providers.scripted import ScriptedConfig, ScriptedProvider
from streamchat.request import build_request
from streamchat.tape import record_tape
from test_tools_downstream import log_agent_loop
from test_web import CHROMIUM, LAST_REPLY, screenshot, send, wait_reply

# test_web's fixtures: the browser, a page that fails the test on a JS error or CSP violation,
# and a server in this process with the history on
browser, new_page, page_errors, start = (
    test_web.browser,
    test_web.new_page,
    test_web.page_errors,
    test_web.start,
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: make system-packages (apt chromium)"
)

CALL_INPUT = {"city": "Paris", "when": ["today", "tomorrow"], "units": "metric"}
THOUGHT = "The user wants the weather, so I should call the tool"
TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}


# records each distinct text the streaming reply's call shows, from the page's own mutations
WATCH_TOOL_INPUT = """() => {
  window.toolInputs = [];
  new MutationObserver(() => {
    const reply = document.querySelector("#messages article.assistant:last-child.streaming");
    const shown = reply?.querySelector(".tool-input")?.textContent ?? "";
    if (shown && shown !== window.toolInputs.at(-1)) window.toolInputs.push(shown);
  }).observe(document.querySelector("#messages"), {
    childList: true, subtree: true, characterData: true,
  });
}"""


def record(directory: Path, tool_input: Any = CALL_INPUT, delay: float = 0.04) -> None:
    """One tape: thinking, then a tool call, ``delay`` seconds per token."""
    options = {"tool_input": json.dumps(tool_input), "thinking": THOUGHT, "delay": delay}
    provider = ScriptedProvider(ScriptedConfig.parse("scripted?" + urlencode(options)))
    request = build_request(
        model="m",
        messages=[{"role": "user", "content": "weather?"}],
        max_tokens=2000,
        tools=[TOOL],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )

    async def run() -> None:
        async for _ in record_tape(directory, request, provider.stream(request), provider="s"):
            pass

    in_a_thread(run)


def in_a_thread(coroutine: Callable[[], Any]) -> Any:
    """Run a coroutine to its end from a test whose thread runs Playwright's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine()).result()


def test_a_tool_call_streams_compactly_and_thinking_is_collapsed(
    tmp_path: Path, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    record(tmp_path / "tapes")
    url = start(f"replay/{tmp_path / 'tapes'}?match=order")
    page = new_page(url)
    page.evaluate(WATCH_TOOL_INPUT)  # every paint of the call, however busy the machine
    send(page, "weather?")
    page.wait_for_selector(f"{LAST_REPLY} details.thinking summary")
    page.click(f"{LAST_REPLY} details.thinking summary")  # opened while the reply streams...
    reply = wait_reply(page)
    call = json.dumps(CALL_INPUT)
    assert reply.locator(".tool-call").text_content() == f"⚙ get_weather({call})"
    seen = page.evaluate("window.toolInputs")
    assert len(seen) >= 3 and all(call.startswith(s.strip("()")) for s in seen), seen  # grew
    thinking = reply.locator("details.thinking")
    assert thinking.evaluate("d => d.open")  # ...and stays open: repaints keep the element
    assert thinking.locator(".thinking-text").text_content() == THOUGHT
    assert thinking.evaluate("d => getComputedStyle(d).color") != reply.locator(
        ".tool-call"
    ).evaluate("n => getComputedStyle(n).color")  # dimmed apart from the answer
    meta = reply.locator(".meta").text_content()
    assert meta.startswith("TTFT ") and " tokens" in meta
    screenshot(page, "web-tool-call.png")
    # the tool-only reply is not a turn the page can send back: the turn is dropped
    assert page.evaluate("state.turns") == []
    # reopened from the history, the reply looks the same, thinking collapsed again
    page.reload()
    page.locator("#conversations li .open").first.click()
    page.wait_for_selector("#messages article.assistant .tool-call")
    reopened = page.locator("#messages article.assistant")
    assert reopened.locator(".tool-call").text_content() == f"⚙ get_weather({call})"
    assert not reopened.locator("details.thinking").evaluate("d => d.open")
    assert reopened.locator(".thinking-text").text_content() == THOUGHT


def test_an_agent_conversation_from_the_history_shows_calls_results_and_answer(
    tmp_path: Path, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    url = start("scripted")
    path = tmp_path / "history.db"  # the server's database (start's history_path)
    in_a_thread(lambda: log_agent_loop(path))
    with HistoryStore(path) as store:
        (logged,) = store.conversations()
    page = new_page(url)
    page.locator("#conversations li .open").first.click()
    page.wait_for_selector("#messages article.tool")
    roles = page.locator("#messages article .role").all_text_contents()
    assert roles == ["You", "Assistant", "Tool", "Assistant"]
    result = page.locator("#messages article.tool .tool-result")
    assert result.locator(".tool-name").text_content() == "↩ tool result"
    assert result.locator(".tool-input").text_content() == "18°C, light rain"
    call = page.locator("#messages article.assistant .tool-call")
    assert call.text_content().startswith("⚙ get_weather({")
    assert page.locator("#messages article.assistant").last.locator(".body").text_content() == (
        "A sunny answer, after all."
    )
    # continuing it as a text chat sends the question and the final answer, nothing broken
    assert page.evaluate("state.turns") == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "A sunny answer, after all."},
    ]
    send(page, "thanks")
    assert wait_reply(page).locator(".body").text_content() == "[turn 2] You said: thanks"
    assert httpx.get(f"{url}/api/conversations/{logged['id']}").json()["messages"][-1]["text"] == (
        "[turn 2] You said: thanks"
    )


def test_tool_names_and_inputs_cannot_inject_markup(
    tmp_path: Path, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    hostile = {"html": "<img src=x onerror=alert(1)><script>alert(2)</script>"}
    record(tmp_path / "tapes", hostile, delay=0)
    page = new_page(start(f"replay/{tmp_path / 'tapes'}?match=order&speed=0"))
    send(page, "weather?")
    reply = wait_reply(page)
    assert reply.locator("img, script").count() == 0
    assert "<img src=x" in reply.locator(".tool-call").text_content()
