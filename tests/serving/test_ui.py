"""The Gradio page's wiring and its handler, without a model: a stand-in service says what the real
one would (tests/serving/test_ui_browser.py drives the real page in a browser)."""

from __future__ import annotations

import asyncio
import json

import gradio as gr
import pytest

from serving.protocol import APIError
from serving.ui import DRAFT_FILE_NAME, build_ui

NOTICE = 'Machine draft, not for clinical use. A "quoted" demo notice.'


class _RefusingService:
    """A service that refuses every image, as CompletionService does a file that is not one."""

    notice = NOTICE
    has_clues = False

    async def draft(self, data, settings):
        raise APIError(400, "image: The data is not a PNG, JPEG or DICOM image.", param="image")


def test_draft_is_the_pages_one_api_endpoint_and_keeps_its_six_outputs():
    page = build_ui(_RefusingService())
    public = [f for f in page.fns.values() if f.api_visibility == "public"]
    assert [f.api_name for f in public] == ["draft"]
    assert len(public[0].outputs) == 6  # clients index them: preview, draft, findings, neighbors, suggested, clues


def test_the_download_is_made_in_the_browser_from_the_draft_box_with_the_notice_first():
    page = build_ui(_RefusingService())
    [download] = [f for f in page.fns.values() if f.js]
    assert download.fn is None  # no server round trip and no copy of the report on the server's disk
    [draft_box] = download.inputs
    assert draft_box.label.startswith("Machine draft")
    assert json.dumps(NOTICE) in download.js and json.dumps(DRAFT_FILE_NAME) in download.js


def test_a_file_that_is_not_an_image_is_a_plain_message_and_is_not_kept(tmp_path):
    page = build_ui(_RefusingService())
    draft = next(f.fn for f in page.fns.values() if f.api_name == "draft")
    upload = tmp_path / "bad.png"
    upload.write_bytes(b"not an image")
    with pytest.raises(gr.Error) as error:
        asyncio.run(draft(str(upload)))
    assert error.value.message == "The data is not a PNG, JPEG or DICOM image."
    assert not upload.exists()


def test_drafting_with_no_file_asks_for_one():
    draft = next(f.fn for f in build_ui(_RefusingService()).fns.values() if f.api_name == "draft")
    with pytest.raises(gr.Error, match="Choose an X-ray file first"):
        asyncio.run(draft(None))
