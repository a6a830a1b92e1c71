"""The Gradio page's wiring and its handler, without a model: stand-in services say what the real
one would (tests/serving/test_ui_browser.py drives the real page in a browser)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import tempfile
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from rrg.data.imaging.limits import ImageLimits
from serving.protocol import InvalidRequest
from serving.ui import DRAFT_FILE_NAME, REFUSED_PAGE_ROUTES, build_ui

NOTICE = 'Machine draft, not for clinical use. A "quoted" demo notice.'


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class _RefusingService:
    """A service that refuses every image, as CompletionService does a file that is not one."""

    notice = NOTICE
    has_clues = False
    limits = ImageLimits()

    def __init__(self):
        self.received: list[bytes] = []

    async def draft(self, data, settings):
        self.received.append(data)
        raise InvalidRequest("image: The data is not a PNG, JPEG or DICOM image.", param="image")


class _DraftingService:
    """A service that drafts every image: a gray 24x32 image, two neighbours and two clues."""

    notice = NOTICE
    has_clues = True
    limits = ImageLimits()

    def __init__(self):
        self.received: list[bytes] = []

    async def draft(self, data, settings):
        self.received.append(data)
        attention = np.zeros((4, 4))
        attention[1, 2] = 1.0
        clues = [SimpleNamespace(text="Clue: small <effusion> & more", weight=0.625, attention=attention),
                 SimpleNamespace(text="Clue: mild cardiomegaly", weight=0.25, attention=attention)]
        plan = SimpleNamespace(
            neighbors=[SimpleNamespace(id="s1", distance=0.123456, report="Clear lungs."),
                       SimpleNamespace(id="s2", distance=0.5, report="Small effusion.")],
            suggested=["Pleural Effusion"], findings={"Pleural Effusion": 0.8, "No Finding": 0.1}, clues=clues,
        )
        return SimpleNamespace(image=SimpleNamespace(pixels=np.full((24, 32), 0.5, dtype=np.float32)), plan=plan,
                               generations=[SimpleNamespace(text="Small left effusion.")])


def _draft_fn(service):
    return next(f.fn for f in build_ui(service).fns.values() if f.api_name == "draft")


def _images_in(html: str) -> list[Image.Image]:
    urls = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(url))) for url in urls]


def test_draft_is_the_pages_one_api_endpoint_and_keeps_its_six_outputs():
    page = build_ui(_RefusingService())
    public = [f for f in page.fns.values() if f.api_visibility == "public"]
    assert [f.api_name for f in public] == ["draft"]
    assert len(public[0].outputs) == 6  # clients index them: preview, draft, findings, neighbors, suggested, clues


def test_the_page_holds_no_component_that_uploads_or_caches_a_file():
    page = build_ui(_RefusingService())
    kinds = {type(block).__name__ for block in page.blocks.values() if isinstance(block, gr.components.Component)}
    assert kinds == {"Markdown", "HTML", "Button", "Textbox", "Label", "Dataframe"}  # no File, Image or Gallery
    [chooser] = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "upload"]
    assert '<input id="rrg-upload-file" type="file"' in chooser.html_template
    assert "readAsDataURL" in chooser.js_on_load and "upload(" not in chooser.js_on_load
    assert chooser.props["max_bytes"] == ImageLimits().max_bytes  # the browser refuses what the server would
    # Gradio evaluates the template as a JS template string: nothing in it may be code.
    assert not re.search(r"\$\{|\{\{|`", chooser.html_template)


def test_the_refused_routes_cover_gradios_upload_and_file_routes():
    for route in ("/gradio_api/upload", "/gradio_api/upload_progress", "/gradio_api/file=x", "/gradio_api/file/x",
                  "/gradio_api/proxy=x", "/gradio_api/stream/x", "/gradio_api/process_recording"):
        assert route.startswith(REFUSED_PAGE_ROUTES), route
    for used in ("/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/heartbeat/x", "/gradio_api/info",
                 "/config", "/theme.css", "/assets/index.js"):
        assert not used.startswith(REFUSED_PAGE_ROUTES), used


def test_the_download_is_made_in_the_browser_from_the_draft_box_with_the_notice_first():
    page = build_ui(_RefusingService())
    [download] = [f for f in page.fns.values() if f.js]
    assert download.fn is None  # no server round trip and no copy of the report on the server's disk
    [draft_box] = download.inputs
    assert draft_box.label.startswith("Machine draft")
    assert json.dumps(NOTICE) in download.js and json.dumps(DRAFT_FILE_NAME) in download.js


def test_a_data_url_of_a_file_that_is_not_an_image_is_a_plain_message():
    service = _RefusingService()
    with pytest.raises(gr.Error) as error:
        asyncio.run(_draft_fn(service)(_data_url(b"not an image")))
    assert error.value.message == "The data is not a PNG, JPEG or DICOM image."
    assert service.received == [b"not an image"]


def test_a_data_url_over_the_byte_limit_is_refused_before_the_model_sees_it():
    service = _RefusingService()
    service.limits = ImageLimits(max_bytes=64)
    with pytest.raises(gr.Error) as error:
        asyncio.run(_draft_fn(service)(_data_url(bytes(300))))
    assert error.value.message == "The upload is larger than the limit of 64 bytes"
    assert service.received == []


def test_drafting_with_no_file_asks_for_one():
    with pytest.raises(gr.Error, match="Choose an X-ray file first"):
        asyncio.run(_draft_fn(_RefusingService())(None))


def test_a_draft_shows_the_image_and_clues_inline_and_writes_no_file(tmp_path, monkeypatch):
    gradio_files, temp_files = tmp_path / "gradio", tmp_path / "tmp"
    gradio_files.mkdir()
    temp_files.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_files))
    monkeypatch.setattr(tempfile, "tempdir", str(temp_files))
    service = _DraftingService()
    page = build_ui(service)
    [draft] = [f for f in page.fns.values() if f.api_name == "draft"]
    image = _png(np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1)))

    # through Gradio's own pre- and post-processing, where a file component would be cached
    output = asyncio.run(page.process_api(draft, [_data_url(image)]))["data"]

    assert service.received == [image]
    preview, text, findings, neighbors, suggested, clues = output
    [decoded] = _images_in(preview)
    assert decoded.size == (32, 24)
    assert text == "Small left effusion." and suggested == "Pleural Effusion"
    assert findings["label"] == "Pleural Effusion"
    assert [row[:2] for row in neighbors["data"]] == [["s1", 0.1235], ["s2", 0.5]]
    assert clues.count("<figure>") == 2 and [im.size for im in _images_in(clues)] == [(256, 256)] * 2
    assert "Clue: small &lt;effusion&gt; &amp; more (weight 0.62)" in clues
    assert not list(gradio_files.rglob("*")) and not list(temp_files.rglob("*"))


def test_the_clue_block_is_hidden_for_a_model_without_clues():
    [clues] = [b for b in build_ui(_RefusingService()).blocks.values() if getattr(b, "elem_id", None) == "clues"]
    assert clues.visible is False
