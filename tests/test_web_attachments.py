"""The web page attaches images and files, in a real Chromium (the fixtures of test_web.py):
picked, dropped or pasted into a tray with thumbnails, sent as image / document blocks with the
file's exact bytes, shown under the turn, and again (from ``/api/attachments``) when the
conversation is reopened; an image is refused, in one line, for a model that reads none."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import test_web
from media_files import make_pdf, make_png
from streamchat.providers import get_provider
from test_web import CHROMIUM, browser, new_page, page_errors, send, start, wait_reply

__all__ = ["browser", "new_page", "page_errors", "start"]  # test_web's fixtures, used here

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} missing: make system-packages (apt chromium)",
)

PNG = make_png(24, 16, (40, 160, 90))
PDF = make_pdf(["Agenda for Monday"])
# a File dropped or pasted: built in the page from base64, as a DataTransfer carries it
GIVE = """([kind, name, type, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  const options = { bubbles: true, cancelable: true };
  if (kind === "paste") {
    const event = new ClipboardEvent("paste", { clipboardData: transfer, ...options });
    document.getElementById("prompt").dispatchEvent(event);
  } else {
    const event = new DragEvent("drop", { dataTransfer: transfer, ...options });
    document.getElementById("composer").dispatchEvent(event);
  }
}"""


def loaded_images(page: Any, selector: str) -> list[int]:
    """The natural widths of the images under ``selector`` (0: not decoded)."""
    return page.eval_on_selector_all(f"{selector} img", "images => images.map(i => i.naturalWidth)")


def test_images_and_pdfs_are_picked_sent_byte_exact_and_shown_again(
    tmp_path: Path, start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    photo, agenda = tmp_path / "photo.png", tmp_path / "agenda.pdf"
    photo.write_bytes(PNG)
    agenda.write_bytes(PDF)
    url = start("scripted?text=Seen.&tag=web-attach")
    page = new_page(url)
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    page.set_input_files("#file", [str(photo), str(agenda)])  # the 📎 picker
    page.wait_for_selector("#attachments figure.document")
    assert loaded_images(page, "#attachments") == [24]  # the thumbnail, decoded
    assert "agenda.pdf" in page.locator("#attachments").text_content()
    page.evaluate(GIVE, ["paste", "pasted.png", "image/png", base64.b64encode(PNG).decode()])
    page.wait_for_function("() => document.querySelectorAll('#attachments img').length === 2")
    page.click("#attachments figure:last-child button.remove")  # removed again
    page.wait_for_function("() => document.querySelectorAll('#attachments img').length === 1")
    send(page, "What are these?")
    reply = wait_reply(page)
    assert reply.locator(".body").text_content().strip() == "Seen."
    assert page.locator("#attachments").is_hidden()  # sent: the tray is empty
    user = page.locator("#messages article.user").last
    assert loaded_images(page, "#messages article.user") == [24]
    assert "agenda.pdf" in user.locator(".attachments").text_content()

    (request,) = get_provider("scripted?text=Seen.&tag=web-attach").requests
    blocks = request.messages[-1].blocks
    assert [(b.type, b.source.media_type, b.source.data) for b in blocks if b.type != "text"] == [
        ("image", "image/png", PNG),
        ("document", "application/pdf", PDF),
    ]
    assert [b.title for b in blocks if b.type == "document"] == ["agenda.pdf"]

    page.reload()  # reopened from the history: the image comes from /api/attachments
    page.locator("#conversations li .open").first.click()
    page.wait_for_selector("#messages article.user .attachments img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#messages article.user img')]"
        ".every(i => i.naturalWidth)"
    )
    assert loaded_images(page, "#messages article.user") == [24]
    test_web.screenshot(page, "web-attachments.png")


def test_a_dropped_image_is_refused_for_a_model_that_reads_none(
    start: Callable[..., str], new_page: Callable[..., Any]
) -> None:
    url = start("scripted", "smollm2")
    page = new_page(url)
    page.wait_for_function("() => document.querySelector('#model').options.length > 1")
    page.select_option("#model", "smollm2")
    page.evaluate(GIVE, ["drop", "photo.png", "image/png", base64.b64encode(PNG).decode()])
    page.wait_for_selector("#status:not([hidden])")
    assert "photo.png: smollm2 reads no images" in page.locator("#status").text_content()
    assert page.locator("#attachments").is_hidden()
    text = base64.b64encode(b"meeting notes").decode()
    page.evaluate(GIVE, ["drop", "notes.txt", "text/plain", text])  # a text file it reads
    page.wait_for_selector("#attachments figure.document")
    assert page.locator("#attachments figure").count() == 1
