"""The pytest plugin as an app's test suite meets it: in a pytest process of its own (pytester),
found through the ``pytest11`` entry point, with real servers and the official clients."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from embedded_model import digits_format

pytest_plugins = ["pytester"]

EXAMPLE_APP = Path(__file__).parent / "example_app"
RUN_TIMEOUT = 280  # seconds for one inner pytest run (each server starts in about a second)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


def gone(pid: int) -> bool:
    """The process has exited (a zombie left for init to reap counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def refuses(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_example_apps_own_suite_passes(pytester: pytest.Pytester) -> None:
    for name in ("chatapp.py", "test_chatapp.py"):
        pytester.makepyfile(**{name[:-3]: (EXAMPLE_APP / name).read_text()})
    result = run(pytester, "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_retries_a_pre_stream_overload PASSED*"])


SCOPES = """
    import json, os
    import pytest

    def note(kind, server):
        with open({log!r}, "a") as file:
            pid = server.server.process.pid
            file.write(json.dumps({{"module": __name__, "kind": kind, "pid": pid,
                                   "url": server.url}}) + "\\n")

    @pytest.mark.parametrize("n", [1, 2])
    def test_scopes(n, streamchat_server, streamchat_module_server, streamchat_session_server):
        for kind, server in (("function", streamchat_server), ("module", streamchat_module_server),
                             ("session", streamchat_session_server)):
            note(kind, server)
            assert server.anthropic().messages.create(
                model="m", max_tokens=20, messages=[{{"role": "user", "content": "hi"}}]
            ).content[0].text == "[turn 1] You said: hi"
"""


def test_servers_start_and_stop_with_their_test_module_and_session(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    log = tmp_path / "servers.jsonl"
    source = textwrap.dedent(SCOPES).format(log=str(log))
    pytester.makepyfile(test_one=source, test_two=source)
    run(pytester).assert_outcomes(passed=4)
    seen = lines(log)
    pids = {kind: {s["pid"] for s in seen if s["kind"] == kind} for kind in ("function", "module")}
    pids["session"] = {s["pid"] for s in seen if s["kind"] == "session"}
    assert [len(pids[kind]) for kind in ("function", "module", "session")] == [4, 2, 1]
    for module in ("test_one", "test_two"):  # one module server for both tests of a module
        assert len({s["pid"] for s in seen if s["kind"] == "module" and s["module"] == module}) == 1
    assert all(gone(s["pid"]) and refuses(s["url"]) for s in seen)  # all stopped afterwards


OPTIONS = """
    import anthropic
    import pytest

    HI = [{"role": "user", "content": "hi"}]

    def test_command_line_model(streamchat_server):
        reply = streamchat_server.anthropic().messages.create(model="m", max_tokens=20, messages=HI)
        assert reply.content[0].text == "from the command line"

    pytestmark = pytest.mark.streamchat(api_key="s3cret")

    @pytest.mark.streamchat(model="scripted?text=marked")
    def test_marker_beats_command_line_and_keys_are_checked(streamchat_server):
        assert streamchat_server.anthropic().messages.create(
            model="m", max_tokens=20, messages=HI).content[0].text == "marked"
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=streamchat_server.url, api_key="wrong").messages.create(
                model="m", max_tokens=20, messages=HI)
        gpt = streamchat_server.openai()
        reply = gpt.chat.completions.create(model="m", messages=HI)
        assert reply.choices[0].message.content == "marked"
        assert streamchat_server.requests()[0]["messages"][0]["content"] == "hi"

    def test_factory_starts_more_servers(streamchat_serve):
        first = streamchat_serve(model="scripted?text=one")
        second = streamchat_serve(model="scripted?text=two", faults="overload")
        assert first.url != second.url
        assert first.openai().chat.completions.create(
            model="m", messages=HI).choices[0].message.content == "one"
        with pytest.raises(anthropic.OverloadedError):
            second.anthropic(max_retries=0).messages.create(model="m", max_tokens=5, messages=HI)
        assert (first.faults(), second.faults()) == ([], ["overload"])

    def test_env_points_sdks_made_by_the_app(streamchat_env):
        reply = anthropic.Anthropic().messages.create(model="m", max_tokens=20, messages=HI)
        assert reply.content[0].text == "from the command line"
        assert streamchat_env.metric("streamchat_requests_total", protocol="anthropic") == 1
"""


def test_options_come_from_command_line_markers_and_factory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_options=textwrap.dedent(OPTIONS))
    result = run(pytester, "--streamchat-model", "scripted?text=from the command line")
    result.assert_outcomes(passed=4)


# JSON output whose grammar spells 30 digits: the reply has text whatever the model would say
RECORD_REPLAY = """
    import os

    def test_reply(streamchat_server):
        with streamchat_server.anthropic().messages.stream(
            model="claude-3-5-haiku-latest", max_tokens=24,
            messages=[{"role": "user", "content": "Name three rivers."}],
            output_config={"format": FORMAT},
        ) as stream:
            text = "".join(stream.text_stream)
        with open(os.environ["REPLY_FILE"], "ab") as file:
            file.write(text.encode() + b"\\n")
""".replace("FORMAT", repr(digits_format(30)))


@pytest.mark.model
def test_record_then_replay_gives_byte_identical_text(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_app=textwrap.dedent(RECORD_REPLAY))
    tapes, recorded, replayed = tmp_path / "tapes", tmp_path / "recorded", tmp_path / "replayed"
    monkeypatch.setenv("REPLY_FILE", str(recorded))
    run(
        pytester, "--streamchat-model", "smollm2", "--streamchat-record", str(tapes)
    ).assert_outcomes(passed=1)
    assert len(list(tapes.glob("*.jsonl"))) == 1
    monkeypatch.setenv("REPLY_FILE", str(replayed))
    run(pytester, "--streamchat-replay", str(tapes)).assert_outcomes(passed=1)
    reply = recorded.read_bytes()
    assert reply.startswith(b"{") and len(reply) > 24  # 24 tokens of a byte or more, then b"\n"
    assert replayed.read_bytes() == recorded.read_bytes()


XDIST = """
    import json, os
    import pytest

    @pytest.mark.parametrize("n", range(6))
    def test_session_server_of_my_worker(n, streamchat_session_server):
        server = streamchat_session_server
        reply = server.openai().chat.completions.create(
            model="m", messages=[{{"role": "user", "content": f"n{{n}}"}}])
        assert reply.choices[0].message.content == f"[turn 1] You said: n{{n}}"
        with open({log!r}, "a") as file:
            file.write(json.dumps({{"worker": os.environ["PYTEST_XDIST_WORKER"],
                                   "pid": server.server.process.pid, "url": server.url}}) + "\\n")
"""


def test_one_server_per_xdist_worker(pytester: pytest.Pytester, tmp_path: Path) -> None:
    log = tmp_path / "workers.jsonl"
    pytester.makepyfile(test_xdist=textwrap.dedent(XDIST).format(log=str(log)))
    run(pytester, "-n", "2").assert_outcomes(passed=6)
    seen = lines(log)
    servers = {w: {(s["pid"], s["url"]) for s in seen if s["worker"] == w} for w in ("gw0", "gw1")}
    assert all(len(each) == 1 for each in servers.values())  # one server per worker...
    assert servers["gw0"] != servers["gw1"]  # ...each its own
    assert all(gone(s["pid"]) for s in seen)


def test_a_failed_test_shows_what_its_server_printed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fails="""
        def test_fails(streamchat_server):
            assert streamchat_server.url == "elsewhere"
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*streamchat serve 1 (http://127.0.0.1:*)*", "*streamchat serving*"]
    )
