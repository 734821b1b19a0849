"""``ask -f PATH`` (repeatable): files attached after the prompt and stdin, each fenced under
its name, through a real process; a file that cannot be attached is one line, nothing sent."""

from __future__ import annotations

import base64
from pathlib import Path

from media_files import make_pdf, make_png
from serving import received, recording
from terminal import Terminal
from test_cli_ask import ask, command, env


def prompt_of(record: Path) -> str:
    (request,) = received(record)
    (turn,) = request["messages"]
    return turn["content"]


def test_prompt_then_stdin_then_each_file(tmp_path: Path) -> None:
    readme, code = tmp_path / "README.md", tmp_path / "tool.py"
    readme.write_text("# Tool\n\nIt does things.\n")
    code.write_text("print('```')")  # no final newline, and a fence inside
    record = tmp_path / "r.jsonl"
    result = ask(tmp_path, "-m", recording(record), "-f", readme, "--file", code, "review this",
                 stdin="diff --git a/x b/x\n+new line\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert prompt_of(record) == (
        "review this\n\ndiff --git a/x b/x\n+new line\n\n"
        f"File {readme}:\n```markdown\n# Tool\n\nIt does things.\n```\n\n"
        f"File {code}:\n````python\nprint('```')\n````"
    )
    assert result.stdout.startswith("[turn 1] You said: review this")


def test_files_alone_are_the_prompt_and_a_terminal_stdin_is_not_waited_for(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("buy milk\n")
    record = tmp_path / "r.jsonl"
    argv = command("ask", "--no-history", "-m", recording(record), "-f", notes)
    terminal = Terminal(argv, env=env(tmp_path))
    assert terminal.wait_for_exit() == 0  # stdin is a terminal: nothing is read from it
    assert prompt_of(record) == f"File {notes}:\n```txt\nbuy milk\n```"


def test_a_file_that_cannot_be_attached_is_one_line_and_nothing_is_sent(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\x00\x00")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    for path, message in (
        (tmp_path / "missing.txt", "cannot read"),
        (binary, "not a text file"),
        (latin, "not UTF-8 text"),
        (tmp_path, "is a directory"),
    ):
        result = ask(tmp_path, "-m", recording(record), "-f", path, "summarise")
        assert result.returncode == 1
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("streamchat: error:") and message in line, line
    assert received(record) == []


def test_an_image_and_a_pdf_go_as_blocks_to_a_model_that_reads_them(tmp_path: Path) -> None:
    photo, report = tmp_path / "photo.png", tmp_path / "report.pdf"
    photo.write_bytes(make_png())
    report.write_bytes(make_pdf(["Page one text"]))
    record = tmp_path / "r.jsonl"
    result = ask(tmp_path, "-m", recording(record), "-f", photo, "-f", report, "what is this?")
    assert result.returncode == 0, result.stderr
    (request,) = received(record)
    text, image, document = request["messages"][0]["blocks"]
    assert text == {"text": "what is this?", "type": "text"}
    assert (image["type"], image["source"]["media_type"]) == ("image", "image/png")
    assert base64.b64decode(image["source"]["data"]) == make_png()
    assert (document["type"], document["title"]) == ("document", "report.pdf")
    assert base64.b64decode(document["source"]["data"]) == report.read_bytes()


def test_the_embedded_model_reads_a_pdf_as_text_and_refuses_an_image_in_one_line(
    tmp_path: Path,
) -> None:
    photo, report = tmp_path / "photo.png", tmp_path / "report.pdf"
    photo.write_bytes(make_png())
    report.write_bytes(make_pdf(["Page one text"]))
    refused = ask(tmp_path, "-f", photo, "describe")  # the embedded default model
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("streamchat: error:") and "reads no images" in line, line
    answered = ask(tmp_path, "--max-tokens", "3", "-f", report, "summarise")
    assert answered.returncode == 0, answered.stderr  # the pages' text was the prompt
