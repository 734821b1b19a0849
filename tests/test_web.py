"""The web chat page in a real Chromium (Playwright), against the server in this process.

Scripted providers make replies slow, long, hostile or failing on demand, and their counters
show what the server did (a Stop must cancel generation, not just hide it). Screenshots go to
tests/artifacts/. The page, its JSON history API and ``chat --web`` are tested here together.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedded_model import GenerateSpy, may_write_nothing
from serving import free_port, serve_in_thread, wait_healthy
from streamchat.providers import ScriptedProvider
from streamchat.request import build_request
from streamchat.server.common import ServerConfig
from streamchat.server.web import CONTENT_SECURITY_POLICY
from streamchat.testing.proxy import TCPProxy

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
LAST_REPLY = "#messages article.assistant:last-child"
Scripted = Callable[..., tuple[str, ScriptedProvider]]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} missing: make system-packages (apt chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page_errors() -> list[str]:
    return []


@pytest.fixture
def new_page(browser: Any, page_errors: list[str]) -> Iterator[Callable[..., Any]]:
    """``new_page(url, **context options)``: a fresh context (own storage); JS errors and CSP
    violations are collected and fail the test."""
    contexts: list[Any] = []

    def make(url: str, **options: Any) -> Any:
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: page_errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda m: page_errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(url + "/")
        return page

    yield make
    for context in contexts:
        context.close()
    assert page_errors == []


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``start(default_model, *more_models, history=True, api_key=None)`` -> base URL."""
    with ExitStack() as stack:

        def run(model: str, *models: str, history: bool = True, api_key: str | None = None) -> str:
            config = ServerConfig(
                default_model=model,
                models=list(models),
                api_key=api_key,
                history_path=str(tmp_path / "history.db") if history else None,
            )
            return stack.enter_context(serve_in_thread(config))

        yield run


def send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_reply(page: Any) -> Any:
    """The last reply, once it has ended (finished, stopped or failed)."""
    page.wait_for_selector(f"{LAST_REPLY}:not(.streaming)")
    return page.locator(LAST_REPLY)


def conversations(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/api/conversations").json()["data"]


def conversation(url: str, conversation_id: int) -> dict[str, Any]:
    return httpx.get(f"{url}/api/conversations/{conversation_id}").json()


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def wait_until(page: Any, expression: str, timeout: float = 15) -> None:
    """Poll a JS expression from here: ``wait_for_function`` evals, which the page's CSP forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        page.wait_for_timeout(25)


def wait_words(page: Any, words: int) -> None:
    """Until the last reply shows more than ``words`` words (it is streaming)."""
    body = f"document.querySelector('{LAST_REPLY} .body')"
    wait_until(page, f"{body}.textContent.split(' ').length > {words}")


def reply_snapshots(page: Any, timeout: float = 20) -> list[str]:
    """The last reply's text each time it changed while it was streaming."""
    page.wait_for_selector(LAST_REPLY)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text, streaming = page.evaluate(
            f"""() => {{ const n = document.querySelector("{LAST_REPLY}");
            return [n.querySelector(".body").textContent, n.classList.contains("streaming")]; }}"""
        )
        if not streaming:
            return seen
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        page.wait_for_timeout(30)
    raise AssertionError("the reply did not finish in time")


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# -- streaming, stopping, history -------------------------------------------------------------


def test_reply_streams_into_the_page_token_by_token(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    words = " ".join(f"word{i}" for i in range(30))
    model, provider = scripted(delay=0.05, text=words)
    page = new_page(start(model))
    send(page, "stream please")
    wait_until(page, f"document.querySelector('{LAST_REPLY} .body').textContent.length > 20")
    screenshot(page, "web-streaming.png")
    snapshots = reply_snapshots(page)
    assert len(snapshots) >= 3, snapshots
    for shorter, longer in itertools.pairwise(snapshots):
        assert longer.startswith(shorter) and len(longer) > len(shorter)
    reply = wait_reply(page)
    assert reply.locator(".body").text_content() == words
    meta = reply.locator(".meta").text_content()
    assert re.fullmatch(r"TTFT \d+ ms · 30 tokens · [\d.]+ tokens/s", meta), meta
    assert (provider.completed, provider.cancelled) == (1, 0)
    screenshot(page, "web-desktop.png")


def test_stop_cancels_generation_and_keeps_the_partial_reply(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, provider = scripted(delay=0.05, text="word ", repeat=400)
    url = start(model)
    page = new_page(url)
    send(page, "talk for a long time")
    wait_words(page, 5)
    page.click("#stop")
    reply = wait_reply(page)
    eventually(lambda: provider.cancelled == 1)
    assert (provider.completed, provider.active) == (0, 0)
    shown = reply.locator(".body").text_content().split()
    assert 5 < len(shown) < 400
    assert reply.locator(".meta").text_content().endswith("stopped")
    assert page.is_visible("#send") and page.is_hidden("#stop")
    [logged] = conversations(url)

    def final_write() -> dict[str, Any] | None:  # the stored reply, once finished (timings set)
        message = conversation(url, logged["id"])["messages"][-1]
        return message if message["ttft"] is not None else None

    stored = eventually(final_write)
    assert stored["interrupted"] is True and stored["stop_reason"] is None
    # the server may have sent a token or two that the page dropped when it stopped reading
    words = stored["text"].split()
    assert words[: len(shown)] == shown and len(words) - len(shown) <= 3
    time.sleep(0.3)
    assert (provider.completed, provider.cancelled) == (0, 1)  # generation stayed stopped


def test_a_reload_mid_reply_resumes_the_reply(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """The page is reloaded while a reply streams: the reply goes on where it was (the server
    generated it once, through), the conversation stays one, and the next turn continues it."""
    model, provider = scripted(delay=0.02, text="word ", repeat=150)
    url = start(model)
    page = new_page(url)
    send(page, "keep talking")
    wait_words(page, 5)
    page.reload()
    reply = wait_reply(page)
    assert reply.locator(".body").text_content().split() == ["word"] * 150
    assert reply.locator(".error").count() == 0
    assert not reply.locator(".meta").text_content().endswith("stopped")
    assert page.locator("#messages article.user .body").all_text_contents() == ["keep talking"]
    assert (len(provider.requests), provider.completed, provider.cancelled) == (1, 1, 0)
    [logged] = conversations(url)
    send(page, "and then?")
    wait_reply(page)

    def both_turns() -> list[dict[str, Any]] | None:
        messages = conversation(url, logged["id"])["messages"]
        return messages if len(messages) == 4 and messages[-1]["ttft"] is not None else None

    messages = eventually(both_turns)
    assert [m["interrupted"] for m in messages[1::2]] == [False, False]
    assert messages[1]["text"].split() == ["word"] * 150


def test_a_dropped_connection_resumes_the_reply(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """The network drops mid-reply (a real TCP proxy cuts it): the page resumes the reply from
    the last frame it read, with nothing lost or shown twice."""
    model, provider = scripted(delay=0.02, text="word ", repeat=150)
    url = start(model)
    with TCPProxy(int(url.rsplit(":", 1)[1])) as proxy:
        page = new_page(f"http://127.0.0.1:{proxy.port}")
        send(page, "keep talking")
        wait_words(page, 5)
        proxy.cut()
        reply = wait_reply(page)
    assert reply.locator(".body").text_content().split() == ["word"] * 150
    assert reply.locator(".error").count() == 0
    assert page.is_hidden("#status")
    assert (len(provider.requests), provider.completed) == (1, 1)


def test_reload_open_continue_and_delete_a_conversation(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, provider = scripted(delay=0.01)
    url = start(model)
    page = new_page(url)
    send(page, "first question")
    first = wait_reply(page).locator(".body").text_content()
    assert first == "[turn 1] You said: first question"
    page.reload()
    item = page.locator("#conversations li", has_text="first question")
    item.locator(".open").click()
    page.wait_for_selector("#messages article.assistant")
    assert page.locator("#messages article .body").all_text_contents() == ["first question", first]
    assert item.evaluate("li => li.classList.contains('current')")
    send(page, "second question")
    second = wait_reply(page).locator(".body").text_content()
    assert second == "[turn 2] You said: second question"
    assert [(t.role, t.content) for t in provider.requests[-1].messages] == [
        ("user", "first question"),
        ("assistant", first),
        ("user", "second question"),
    ]
    [logged] = conversations(url)
    assert (logged["turns"], logged["source"]) == (2, "web")
    texts = [m["text"] for m in conversation(url, logged["id"])["messages"]]
    assert texts == ["first question", first, "second question", second]
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#conversations li .delete").click()
    page.wait_for_selector("#conversations li", state="detached")
    assert conversations(url) == []
    assert httpx.get(f"{url}/api/conversations/{logged['id']}").status_code == 404
    assert page.is_visible("#empty")  # the open conversation was the one deleted


def test_continuing_an_older_twin_conversation_logs_to_that_one(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """Two conversations with the same turns: matching by content would pick the newer one;
    the page names the conversation it continues (x-streamchat-conversation)."""
    model, _ = scripted()
    url = start(model)
    page = new_page(url)
    for _ in range(2):
        page.click("#new-chat")
        send(page, "same words")
        wait_reply(page)
    newer, older = conversations(url)
    page.locator(f"#conversations li[data-id='{older['id']}'] .open").click()
    page.wait_for_selector(f"#conversations li[data-id='{older['id']}'].current")
    send(page, "continue the older one")
    wait_reply(page)
    assert len(conversation(url, older["id"])["messages"]) == 4
    assert len(conversation(url, newer["id"])["messages"]) == 2


def test_history_off_the_page_still_chats(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted()
    page = new_page(start(model, history=False))
    page.wait_for_selector("#history-note:not([hidden])")
    assert "history is off" in page.text_content("#history-note")
    send(page, "no history")
    assert wait_reply(page).locator(".body").text_content() == "[turn 1] You said: no history"
    assert page.locator("#conversations li").count() == 0


# -- safety and rendering ---------------------------------------------------------------------


def test_model_output_cannot_inject_markup_or_script(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    hostile = (
        '<img src=x onerror="alert(1)"> <script>alert(2)</script> '
        "[x](javascript:alert(3)) <b onmouseover=alert(4)>bold</b> ```html\n<img src=y>\n```"
    )
    model, _ = scripted(text=hostile)
    url = start(model)
    page = new_page(url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    send(page, "<i>user text is text too</i>")
    reply = wait_reply(page)
    injected = "document.querySelectorAll('.message img, .message script, .message b, "
    injected += ".message i, .message a').length"
    assert page.evaluate(injected) == 0
    assert "<script>alert(2)</script>" in reply.locator(".body").text_content()
    assert page.text_content("#messages article.user .body") == "<i>user text is text too</i>"
    page.reload()  # and again when the stored conversation is shown
    page.locator("#conversations li .open").click()
    page.wait_for_selector(LAST_REPLY)
    assert page.evaluate(injected) == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_markdown_renders_code_blocks_and_inline_styles(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    text = (
        "## Steps\n\nRun **this** with `python`:\n\n```python\nprint('hi')\nx = 1\n```\n\n"
        "- one\n- *two*\n\n1. first\n2. see [docs](https://example.com/a)"
    )
    model, _ = scripted(text=text)
    page = new_page(start(model))
    send(page, "show me code")
    reply = wait_reply(page)
    assert reply.locator("pre > code.language-python").text_content() == "print('hi')\nx = 1"
    assert reply.locator("h4").text_content() == "Steps"
    assert reply.locator("p strong").text_content() == "this"
    assert reply.locator("p > code").text_content() == "python"
    assert reply.locator("ul > li").all_text_contents() == ["one", "two"]
    assert reply.locator("ul em").text_content() == "two"
    assert reply.locator("ol > li").count() == 2
    link = reply.locator("ol a")
    assert (link.get_attribute("href"), link.get_attribute("rel")) == (
        "https://example.com/a",
        "noopener noreferrer",
    )


def test_page_and_files_carry_strict_security_headers(start: Callable[..., str]) -> None:
    url = start("scripted")
    page = httpx.get(url + "/").text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert {"/static/app.js", "/static/markdown.js", "/static/vendor/highlight.min.js"} <= set(
        assets
    )
    for path in ("/", *assets, "/static/vendor/highlight.js-LICENSE"):
        response = httpx.get(url + path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "<style" not in page and " style=" not in page and " on" not in page.lower()
    assert all('src="/static/' in tag for tag in re.findall(r"<script[^>]*>", page))
    assert "http" not in page  # no CDN: every asset comes from this server
    for escape in ("/static/../server/web.py", "/static/%2e%2e/server/web.py", "/static/..%2fweb"):
        assert httpx.get(url + escape).status_code == 404, escape


# -- errors -----------------------------------------------------------------------------------


def test_overload_is_explained_and_the_turn_dropped(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted()
    busy, busy_provider = scripted(error_before="overloaded_error")
    page = new_page(start(model, busy))
    page.select_option("#model", busy)
    send(page, "are you there?")
    error = wait_reply(page).locator(".error").text_content()
    assert error.startswith("The server is overloaded") and "overloaded_error" in error
    assert len(busy_provider.requests) == 1
    page.select_option("#model", model)
    send(page, "now?")  # the failed turn is not sent again
    wait_reply(page)
    assert [t.content for t in busy_provider.requests[0].messages] == ["are you there?"]


def test_an_error_mid_reply_keeps_the_text_and_says_why(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted(text="one two three four", error_after=2, error="api_error")
    page = new_page(start(model))
    send(page, "fail half way")
    reply = wait_reply(page)
    assert reply.locator(".body").text_content() == "one two"
    assert "api_error" in reply.locator(".error").text_content()


def test_a_server_that_went_away_is_reported(
    scripted: Scripted, new_page: Callable[..., Any]
) -> None:
    model, _ = scripted()
    with serve_in_thread(ServerConfig(default_model=model)) as url:
        page = new_page(url)
        page.wait_for_selector("#model option", state="attached")
    send(page, "hello?")
    error = wait_reply(page).locator(".error").text_content()
    assert "Cannot reach the streamchat server" in error


# -- controls ---------------------------------------------------------------------------------


def test_model_selector_lists_the_served_models_and_routes_to_the_choice(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    default, _ = scripted(tag="a")
    other, other_provider = scripted(tag="b", text="from b")
    page = new_page(start(default, other))
    page.wait_for_selector("#model option", state="attached")
    models = httpx.get(page.url + "v1/models", headers={"anthropic-version": "2023-06-01"})
    offered = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert offered == [m["id"] for m in models.json()["data"]] == [default, other]
    page.select_option("#model", other)
    send(page, "which model?")
    assert wait_reply(page).locator(".body").text_content() == "from b"
    assert [r.model for r in other_provider.requests] == [other]


def test_enter_sends_and_shift_enter_starts_a_new_line(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, provider = scripted()
    page = new_page(start(model))
    page.click("#prompt")
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#prompt") == "line one\nline two"
    assert provider.requests == []
    page.keyboard.press("Enter")
    wait_reply(page)
    assert page.input_value("#prompt") == ""
    assert provider.requests[0].messages[0].content == "line one\nline two"
    assert page.text_content("#messages article.user .body") == "line one\nline two"


def test_api_key_is_asked_once_per_session_and_sent(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, provider = scripted()
    page = new_page(start(model, api_key="sekret"))
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key", "sekret")
    page.press("#key", "Enter")
    page.wait_for_selector("#model option", state="attached")
    assert page.is_hidden("#key-form")
    send(page, "with a key")
    assert wait_reply(page).locator(".body").text_content() == "[turn 1] You said: with a key"
    page.reload()
    page.wait_for_selector("#conversations li")  # the stored key opened the history at once
    assert page.is_hidden("#key-form")
    assert len(provider.requests) == 1


def test_phone_sized_viewport(
    scripted: Scripted, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    text = "A phone-sized reply with code:\n\n```sh\n" + "echo a-long-line " * 12 + "\n```"
    model, _ = scripted(text=text)
    page = new_page(start(model), viewport={"width": 390, "height": 844}, is_mobile=True)
    send(page, "hello from a phone")
    wait_reply(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    assert page.is_visible("#toggle-sidebar")
    assert page.locator("#sidebar").bounding_box()["x"] < 0  # a drawer, closed
    for control in ("#prompt", "#send", "#model"):
        box = page.locator(control).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, control
    screenshot(page, "web-phone.png")
    page.click("#toggle-sidebar")
    wait_until(page, "document.querySelector('#sidebar').getBoundingClientRect().x === 0")
    screenshot(page, "web-phone-history.png")
    page.locator("#conversations li .open").click()
    wait_until(page, "document.querySelector('#sidebar').getBoundingClientRect().x < 0")


# -- the server side of the page's history ----------------------------------------------------


def test_turns_naming_a_conversation_are_logged_to_it(scripted: Scripted, tmp_path: Path) -> None:
    model, _ = scripted()
    config = ServerConfig(default_model=model, history_path=str(tmp_path / "h.db"))
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "a"}]}
    header = "x-streamchat-conversation"
    with serve_in_thread(config) as url:
        created = httpx.post(f"{url}/api/conversations", json={"model": "claude-x"}).json()
        assert (created["model"], created["source"], created["messages"]) == ("claude-x", "web", [])
        named = httpx.post(f"{url}/v1/messages", json=body, headers={header: str(created["id"])})
        assert named.status_code == 200
        assert [m["text"] for m in conversation(url, created["id"])["messages"]] == [
            "a",
            "[turn 1] You said: a",
        ]
        for bad in ("abc", "-1", "1" * 40):  # not an id: logged by content, as for any client
            assert httpx.post(f"{url}/v1/messages", json=body, headers={header: bad}).is_success
        assert len(conversations(url)) == 4
        gone = httpx.post(f"{url}/v1/messages", json=body, headers={header: "999999"})
        assert gone.is_success and gone.json()["content"][0]["text"] == "[turn 1] You said: a"
        refused = httpx.post(f"{url}/api/conversations", json={"model": 5})
        assert refused.status_code == 400 and "model" in refused.json()["error"]["message"]


# -- the real model, and chat --web -------------------------------------------------------------


@pytest.mark.model
def test_the_embedded_model_streams_into_the_page_and_stops(
    local_model: Any,
    start: Callable[..., str],
    new_page: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Generation is held at its 12th token while the page shows the first ones and Stop is
    pressed, so the reply is certainly still streaming then, however short the model's story
    would be. (Its first token has text: ``embedded_model.may_write_nothing``.)"""
    story = "Tell me a long story about a lighthouse keeper."
    request = build_request(model="m", messages=[{"role": "user", "content": story}])
    assert not may_write_nothing(local_model, request)
    spy = GenerateSpy(local_model, hold_after=12)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    page = new_page(start(ServerConfig().default_model))
    try:
        send(page, story)
        assert spy.holding.wait(timeout=120)
        body = f"document.querySelector('{LAST_REPLY} .body')"
        wait_until(page, f"{body} && {body}.textContent.length > 0", timeout=120)
        page.click("#stop")
    finally:
        spy.release()
    reply = wait_reply(page)
    assert reply.locator(".body").text_content()
    assert "stopped" in reply.locator(".meta").text_content()
    assert "TTFT" in reply.locator(".meta").text_content()
    screenshot(page, "web-embedded-model.png")


def test_chat_web_serves_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "STREAMCHAT_DB": str(tmp_path / "h.db")}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    command = [sys.executable, "-m", "streamchat.cli.main", "chat", "--web", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--model", "scripted"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, lambda: process.poll() is None, timeout=60)
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "app.js" in page.text
        body = {"model": "x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/messages", json=body).status_code == 200
        assert len(conversations(url)) == 1  # the history is on, as for the terminal chat
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert f"streamchat web chat at {url}/" in output
