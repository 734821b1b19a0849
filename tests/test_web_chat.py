"""The web page at the level of the chat tools people compare it with (issue 16), in Chromium.

Highlighted code with a Copy button (the clipboard read back), tables, light and dark themes
(screenshots in tests/artifacts/), regenerate, edit-and-resend, the settings panel (what the
server received, from the scripted provider's ``record=``), accessibility (axe-core from the
npm registry, injected into the page) and the incremental Markdown renderer: its result equals
a whole render for random splits, and its script time per animation frame stays flat from 1k
to 10k tokens while a whole re-render grows with the reply.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_web
from serving import received, recording
from streamchat.server.common import ServerConfig
from test_web import CHROMIUM, LAST_REPLY, screenshot, send, wait_reply, wait_until

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

JS_CACHE = Path(__file__).parent / ".js"  # npm test tools, ignored by git
VIEWPORT = {"width": 1100, "height": 900}
CODE = (
    'def greet(name: str) -> str:\n    # say hello\n    return f"Hello, {name}!"\n\n'
    'print(greet("web"))'
)
TABLE = (
    "| Model | Tokens/s | Notes |\n"
    "|:------|---------:|:-----:|\n"
    "| **small** | 42.5 | `fast` |\n"
    "| large | 7 | a \\| bar |"
)
RICH = (
    "## A streamed answer\n\nHere is **bold**, *italic*, ~~struck~~ and `inline code`.\n\n"
    f"```python\n{CODE}\n```\n\n{TABLE}\n\n"
    "> A quote with a [link](https://example.com/docs).\n\n"
    "1. first\n2. second\n\n- a bullet\n- another\n\n---\n\nThe end."
)


def settle(page: Any) -> Any:
    """The last reply, finished, with nothing focused (screenshots and axe see a quiet page)."""
    reply = wait_reply(page)
    page.evaluate("document.activeElement.blur()")
    return reply


# -- code, copy, tables ---------------------------------------------------------------------


def test_code_is_highlighted_and_the_copy_button_copies_it(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted(
        text=f"Look:\n\n```python\n{CODE}\n```\n\nand:\n\n```sh\necho <b>&amp;\n```"
    )
    page = new_page(start(model), permissions=["clipboard-read", "clipboard-write"])
    send(page, "code please")
    reply = wait_reply(page)
    python = reply.locator("pre > code.language-python")
    assert python.text_content() == CODE  # highlighting adds spans, never changes the text
    tokens = python.evaluate(
        "code => [...code.querySelectorAll('span')].map(s => [s.className, s.textContent])"
    )
    assert ["hljs-keyword", "def"] in tokens and ["hljs-keyword", "return"] in tokens
    assert ["hljs-comment", "# say hello"] in tokens
    assert ["hljs-title function_", "greet"] in tokens
    assert any(kind == "hljs-string" and text.startswith('f"Hello') for kind, text in tokens)
    assert python.evaluate("c => getComputedStyle(c.querySelector('.hljs-keyword')).color") != (
        python.evaluate("c => getComputedStyle(c).color")
    )  # the theme colours the tokens
    shell = reply.locator("pre > code.language-sh")
    assert shell.text_content() == "echo <b>&amp;"  # model text stays text, entities and all
    assert reply.locator(".code-block .code-lang").all_text_contents() == ["python", "sh"]
    first, second = reply.locator(".code-block").all()
    copy = first.get_by_role("button", name="Copy python code")
    copy.click()
    wait_until(page, "document.querySelector('.code-block button.copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    second.get_by_role("button", name="Copy sh code").click()
    assert page.evaluate("navigator.clipboard.readText()") == "echo <b>&amp;"
    wait_until(page, "document.querySelector('.code-block button.copy').textContent === 'Copy'")


def test_tables_render_with_inline_styles_and_alignment(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted(text=f"Compare:\n\n{TABLE}\n\nDone.")
    page = new_page(start(model))
    send(page, "a table")
    reply = wait_reply(page)
    table = reply.locator("table")
    assert table.locator("thead th").all_text_contents() == ["Model", "Tokens/s", "Notes"]
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").all_text_contents() == ["small", "42.5", "fast"]
    assert rows.nth(1).locator("td").all_text_contents() == ["large", "7", "a | bar"]
    assert table.locator("tbody strong").text_content() == "small"
    assert table.locator("tbody code").text_content() == "fast"
    aligns = table.locator("thead th").evaluate_all("ths => ths.map(th => th.className)")
    assert aligns == ["align-left", "align-right", "align-center"]
    assert rows.nth(0).locator("td").nth(1).evaluate("td => getComputedStyle(td).textAlign") == (
        "right"
    )
    assert reply.locator("p").all_text_contents() == ["Compare:", "Done."]


# -- the incremental renderer ---------------------------------------------------------------

CORPUS = [
    RICH,
    "\n\n".join(f"paragraph {i} with **bold**" for i in range(80)),  # more blocks than a group
    "```py\nx = 1\n",  # a fence the reply never closed
    "text\n```js\nlet a = `b`;\n```\nafter the fence, no blank line\n# heading\npara",
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3",  # a table cut off mid-row (max_tokens)
    "- one\n- two\n  continued\n1. three\n\n> q1\n> q2\n\n***\n~~~\ntilde fence\n~~~",
    "漢字とかな **太字** 😀👍🏽 emoji\n\n| 列 | 😀 |\n|---|---|\n| 中文 | ok |",
    "w" * 300 + " a 300-character word\n\n" + "para " * 50,
    "not | a table\n\n---x\n--\n- \n-item\n```\n```",
]


def test_incremental_rendering_equals_a_whole_render_for_random_splits(
    start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """Each text fed in random pieces (a fence or a table row split anywhere) ends as the
    same DOM as the text rendered at once; and while it streams, what is shown is always the
    render of the text so far (finished blocks kept, the tail re-parsed)."""
    page = new_page(start("scripted"))
    rng = random.Random(16)
    for text in CORPUS:
        for _ in range(4):
            cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(3, 40))))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            result = page.evaluate(
                """(pieces) => {
                  const html = (root) => {  // the blocks, without their layout groups
                    const copy = root.cloneNode(true);
                    const groups = copy.querySelectorAll(".md-chunk");
                    for (const group of groups) group.replaceWith(...group.childNodes);
                    return copy.innerHTML;
                  };
                  const whole = (text, ended) => {
                    const root = document.createElement("div");
                    new MarkdownView(root).update(text, ended);
                    return html(root);
                  };
                  const root = document.createElement("div");
                  const view = new MarkdownView(root);
                  let text = "";
                  for (const piece of pieces) {
                    text += piece;
                    view.update(text);
                    if (html(root) !== whole(text, false)) {
                      return {at: text, shown: html(root), expected: whole(text, false)};
                    }
                  }
                  view.update(text, true);
                  const expected = document.createElement("div");
                  renderMarkdown(text, expected);
                  return {done: html(root), expected: expected.innerHTML, once: whole(text, true)};
                }""",
                pieces,
            )
            assert "at" not in result, result
            assert result["done"] == result["expected"] == result["once"], (pieces, result)


def mixed_markdown(sections: int) -> str:
    """A long reply of the usual mix: headings, paragraphs, lists, code, tables, quotes."""
    parts = []
    for i in range(sections):
        parts.append(
            f"### Part {i}\n\nSome **bold** text with `code`, *emphasis* and a "
            f"[link](https://example.com/{i}) in a paragraph of about thirty words that goes "
            "on for a while so that it wraps across a line or two of the page.\n\n"
            f"- item one of {i}\n- item two with `x = {i}`\n- item three\n\n"
            f"```python\ndef part_{i}(x):\n    # the {i}th\n    return x * {i} + 1\n```\n\n"
            f"| n | square |\n|---|---:|\n| {i} | {i * i} |\n| {i + 1} | {(i + 1) ** 2} |\n\n"
            f"> quoted line {i}\n\n"
        )
    return "".join(parts)


def test_render_time_per_frame_stays_flat_from_1k_to_10k_tokens(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """A 10k-token reply streams through the page; app.js measures each frame's render
    (performance.measure "streamchat-render", including the layout that keeping the view at
    the bottom forces). The median frame near 10k tokens costs about what it did near 1k:
    finished blocks are neither parsed nor laid out again. A whole re-render of the same text,
    timed in the same page, grows with it (what the page did before)."""
    text = mixed_markdown(120)
    model, _ = scripted(text=text, delay=0.0005)
    page = new_page(start(model))
    page.evaluate("localStorage.setItem('streamchat-settings', JSON.stringify({maxTokens: 20000}))")
    send(page, "a long answer")
    page.wait_for_selector(f"{LAST_REPLY}:not(.streaming)", timeout=180_000)
    reply = page.locator(LAST_REPLY)
    frames = page.evaluate(
        """() => performance.getEntriesByName("streamchat-render")
                  .map(m => [m.detail.tokens, m.duration])"""
    )
    tokens = int(reply.locator(".meta").text_content().split(" tokens")[0].split("· ")[-1])
    assert tokens > 10_000, tokens

    def per_frame(low: int, high: int) -> float:
        window = [duration for count, duration in frames if low <= count < high]
        assert len(window) >= 20, (low, high, len(window))
        return statistics.median(window)

    early, late = per_frame(500, 2_000), per_frame(8_500, 10_000)
    whole = page.evaluate(
        """(text) => {
          const time = (part) => {  // a whole re-render, as a frame did before: median of 5
            const runs = [];
            for (let i = 0; i < 5; i++) {
              const root = document.createElement("div"), t = performance.now();
              renderMarkdown(part, root);
              runs.push(performance.now() - t);
            }
            return runs.sort((a, b) => a - b)[2];
          };
          const words = text.split(" ");
          return [time(words.slice(0, 1250).join(" ")), time(words.slice(0, 9250).join(" "))];
        }""",
        text,
    )
    report = {
        "frames": len(frames),
        "median_ms_per_frame": [round(early, 3), round(late, 3)],
        "whole_render_ms": [round(whole[0], 3), round(whole[1], 3)],
    }
    print(f"\nrender per frame: {json.dumps(report)}")
    assert whole[1] / max(whole[0], 0.05) > 4, report  # the naive way grows with the reply
    assert late / max(early, 0.05) < 2, report  # the page's stays flat
    assert late < whole[1] / 3, report


# -- themes ---------------------------------------------------------------------------------


def background(page: Any) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_theme_follows_the_system_and_the_toggle_is_remembered(
    scheme: str,
    scripted: Callable[..., Any],
    start: Callable[..., str],
    new_page: Callable[..., Any],
) -> None:
    model, _ = scripted(text=RICH)
    colors = {"light": "rgb(247, 247, 248)", "dark": "rgb(22, 24, 28)"}
    other = "dark" if scheme == "light" else "light"
    page = new_page(start(model), color_scheme=scheme, viewport=VIEWPORT)
    assert background(page) == colors[scheme]
    assert page.get_attribute("#theme", "aria-label") == f"Switch to {other} theme"
    send(page, "Show me what you can render.")
    settle(page)
    screenshot(page, f"web-{scheme}.png")
    page.click("#theme")
    assert background(page) == colors[other]
    assert page.get_attribute("#theme", "aria-label") == f"Switch to {scheme} theme"
    page.reload()  # remembered, and applied before the page paints (theme.js, no flash)
    assert page.evaluate("document.documentElement.dataset.theme") == other
    assert background(page) == colors[other]
    page.click("#open-settings")  # "Follow the system" in the settings forgets the choice
    page.select_option("#theme-choice", "")
    page.click("#settings-save")
    assert background(page) == colors[scheme]
    assert page.evaluate("localStorage.getItem('streamchat-theme')") is None


# -- regenerate, edit -----------------------------------------------------------------------


def history(url: str) -> list[list[str]]:
    """Each stored conversation's message texts, newest first."""
    listed = httpx.get(f"{url}/api/conversations").json()["data"]
    return [
        [m["text"] for m in httpx.get(f"{url}/api/conversations/{c['id']}").json()["messages"]]
        for c in listed
    ]


def test_regenerate_asks_again_with_the_model_chosen_now_and_replaces_the_reply(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    first, first_provider = scripted(tag="a", text="answer from a")
    second, second_provider = scripted(tag="b", text="answer from b")
    url = start(first, second)
    page = new_page(url)
    send(page, "one question")
    reply = wait_reply(page)
    assert reply.locator(".body").text_content() == "answer from a"
    regenerate = reply.get_by_role("button", name="Regenerate")
    assert regenerate.is_visible()
    page.select_option("#model", second)
    regenerate.click()
    reply = wait_reply(page)
    assert page.locator("#messages article").count() == 2  # replaced, not added
    assert reply.locator(".body").text_content() == "answer from b"
    assert [t.content for t in second_provider.requests[0].messages] == ["one question"]
    assert len(first_provider.requests) == 1
    # the history keeps the first answer, and logs the regenerated one as its own conversation
    wait_until(page, "document.querySelectorAll('#conversations li').length === 2")
    assert history(url) == [["one question", "answer from b"], ["one question", "answer from a"]]
    send(page, "and then?")  # continues the regenerated conversation, not the first one
    wait_reply(page)
    assert [t.content for t in second_provider.requests[-1].messages] == [
        "one question",
        "answer from b",
        "and then?",
    ]
    assert history(url)[0] == ["one question", "answer from b", "and then?", "answer from b"]
    assert len(history(url)) == 2
    assert page.locator("#conversations li.current").count() == 1


def test_a_failed_reply_can_be_regenerated(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    busy, _ = scripted(error_before="overloaded_error")
    fine, fine_provider = scripted()
    page = new_page(start(busy, fine))
    send(page, "try me")
    assert "overloaded" in wait_reply(page).locator(".error").text_content()
    page.select_option("#model", fine)
    page.locator(LAST_REPLY).get_by_role("button", name="Regenerate").click()
    assert wait_reply(page).locator(".body").text_content() == "[turn 1] You said: try me"
    assert page.locator("#messages article").count() == 2
    assert page.locator("#messages .error").count() == 0
    assert [t.content for t in fine_provider.requests[0].messages] == ["try me"]


def test_edit_a_previous_turn_and_resend_from_there(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, provider = scripted()
    url = start(model)
    page = new_page(url)
    for question in ("first question", "second question"):
        send(page, question)
        wait_reply(page)
    first_turn = page.locator("#messages article.user").first
    first_turn.get_by_role("button", name="Edit").click()
    box = first_turn.get_by_role("textbox", name="Edit your message")
    assert box.input_value() == "first question"
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Edit your message"
    screenshot(page, "web-edit.png")
    box.press("Escape")  # cancel: nothing changes
    assert first_turn.locator(".body").text_content() == "first question"
    assert page.locator("#messages article").count() == 4
    first_turn.get_by_role("button", name="Edit").click()
    box.fill("a better first question")
    first_turn.get_by_role("button", name="Send").click()
    answer = wait_reply(page).locator(".body").text_content()
    assert page.locator("#messages .body").all_text_contents() == [
        "a better first question",
        "[turn 1] You said: a better first question",
    ]
    assert [t.content for t in provider.requests[-1].messages] == ["a better first question"]
    send(page, "and more")
    wait_reply(page)
    assert [t.content for t in provider.requests[-1].messages] == [
        "a better first question",
        answer,
        "and more",
    ]
    stored = history(url)
    assert len(stored) == 2  # the original, and the edited branch continued by id
    assert stored[0] == [
        "a better first question",
        "[turn 1] You said: a better first question",
        "and more",
        "[turn 2] You said: and more",
    ]
    assert stored[1][0::2] == ["first question", "second question"]


# -- settings -------------------------------------------------------------------------------


def test_settings_are_applied_to_the_request_and_remembered(
    tmp_path: Path, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    record = tmp_path / "requests.jsonl"
    page = new_page(start(recording(record)))
    send(page, "defaults")
    wait_reply(page)
    [plain] = received(record)
    assert (plain["system"], plain["temperature"], plain["max_tokens"]) == (None, None, 1024)
    page.click("#open-settings")
    assert page.evaluate("document.activeElement.id") == "system"  # the dialog takes focus
    page.fill("#system", "You answer like a pirate.")
    page.fill("#temperature", "1.5")  # out of range: the form refuses it
    page.fill("#max-tokens", "77")
    screenshot(page, "web-settings.png")
    page.click("#settings-save")
    assert page.is_visible("#settings")
    page.fill("#temperature", "0.3")
    page.click("#settings-save")
    assert page.is_hidden("#settings")
    assert page.evaluate("document.activeElement.id") == "open-settings"  # focus comes back
    send(page, "with settings")
    wait_reply(page)
    sent = received(record)[-1]
    assert (sent["system"], sent["temperature"], sent["max_tokens"]) == (
        "You answer like a pirate.",
        0.3,
        77,
    )
    page.reload()
    page.click("#open-settings")
    assert page.input_value("#system") == "You answer like a pirate."
    assert page.input_value("#temperature") == "0.3"
    assert page.input_value("#max-tokens") == "77"
    page.fill("#temperature", "")  # empty: the model's default again
    page.fill("#system", "")
    page.press("#max-tokens", "Escape")  # Escape cancels: nothing saved
    assert page.is_hidden("#settings")
    page.click("#open-settings")
    assert page.input_value("#temperature") == "0.3"
    page.fill("#temperature", "")
    page.fill("#system", "")
    page.click("#settings-save")
    send(page, "defaults again")
    wait_reply(page)
    sent = received(record)[-1]
    assert (sent["system"], sent["temperature"], sent["max_tokens"]) == (None, None, 77)


# -- accessibility --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core 4 from the npm registry, cached in tests/.js (ignored by git)."""
    script = JS_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm missing: the accessibility check needs axe-core from the npm registry")
        subprocess.run(
            [npm, "install", "--prefix", str(JS_CACHE), "--no-audit", "--no-fund", "axe-core@4"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return script.read_text()


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """Serious and critical violations axe finds on the page as it is now (WCAG 2.x A, AA)."""
    page.evaluate(source)  # evaluated from outside: the page's CSP still forbids inline script
    passed, violations = page.evaluate(
        """() => axe.run(document, {runOnly: {type: "tag",
              values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]}})
            .then(r => [r.passes.map(p => p.id), r.violations.map(v => ({id: v.id,
              impact: v.impact, nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}))])"""
    )
    assert {"color-contrast", "button-name", "label", "aria-allowed-attr"} <= set(passed)
    return [v for v in violations if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_or_critical_accessibility_violations(
    scheme: str,
    axe_source: str,
    scripted: Callable[..., Any],
    start: Callable[..., str],
    new_page: Callable[..., Any],
) -> None:
    model, _ = scripted(text=RICH + "\n\n```sh\n" + "echo a-long-line " * 20 + "\n```")
    page = new_page(start(model), color_scheme=scheme)
    assert axe_violations(page, axe_source) == []  # the empty page
    send(page, "everything")
    settle(page)
    assert axe_violations(page, axe_source) == []  # a reply with code, a table, quotes
    page.locator("#messages article.user").get_by_role("button", name="Edit").click()
    assert axe_violations(page, axe_source) == []  # editing a turn
    page.keyboard.press("Escape")
    page.click("#open-settings")
    assert axe_violations(page, axe_source) == []  # the settings dialog


def test_the_streaming_reply_is_a_polite_live_region_and_busy_until_done(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    model, _ = scripted(text="word " * 40, delay=0.03)
    page = new_page(start(model))
    log = page.locator("#messages")
    assert (log.get_attribute("role"), log.get_attribute("aria-live")) == ("log", "polite")
    send(page, "talk")
    wait_until(page, f"document.querySelector('{LAST_REPLY} .body').textContent.length > 10")
    assert page.get_attribute(LAST_REPLY, "aria-busy") == "true"
    settle(page)
    assert page.get_attribute(LAST_REPLY, "aria-busy") == "false"


def test_focus_order_follows_the_page(
    scripted: Callable[..., Any], start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """Tab walks sidebar, header, the conversation (code, Copy, actions), then the composer;
    every stop has a name."""
    model, _ = scripted(text="Run:\n\n```sh\nls\n```")
    page = new_page(start(model, history=False))
    send(page, "hello")
    settle(page)
    page.focus("#new-chat")
    stops = []
    for _ in range(12):
        stops.append(
            page.evaluate(
                """() => { const e = document.activeElement;
                  return e.id || e.getAttribute("aria-label")
                    || (e.tagName === "BUTTON" ? e.textContent : e.tagName.toLowerCase()); }"""
            )
        )
        page.keyboard.press("Tab")
    assert stops[: stops.index("send") + 1] == [
        "new-chat",
        "model",
        "theme",
        "open-settings",
        "Edit",
        "Copy sh code",
        "pre",  # the code scrolls sideways: reachable by keyboard
        "Regenerate",
        "attach",  # images and files for the next message
        "prompt",
        "send",
    ]


# -- the real model, for the README ---------------------------------------------------------


@pytest.mark.model
def test_the_embedded_model_reply_in_both_themes(
    local_model: Any, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    """A real reply (the embedded model, temperature 0 from the settings panel) with code,
    screenshotted light and dark: docs/img/ takes these for the README."""
    small = {"width": 1000, "height": 520}
    page = new_page(start(ServerConfig().default_model), color_scheme="light", viewport=small)
    page.evaluate(
        "localStorage.setItem('streamchat-settings', "
        "JSON.stringify({temperature: 0, maxTokens: 400}))"
    )
    send(page, "Write a short Python function that checks whether a word is a palindrome.")
    page.wait_for_selector(f"{LAST_REPLY}:not(.streaming)", timeout=300_000)
    settle(page)
    assert page.locator(f"{LAST_REPLY} .body").text_content().strip()
    screenshot(page, "web-model-light.png")
    page.click("#theme")
    page.mouse.move(600, 700)  # no hover or focus ring on the toggle in the picture
    page.evaluate("document.activeElement.blur()")
    screenshot(page, "web-model-dark.png")
