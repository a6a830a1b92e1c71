"""The Gradio page in a real browser: Debian's headless Chromium, driven by Playwright, against
`rrg serve --engine hf` with the micro bundle, as a person uses the page."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from rrg.demo import read_manifest
from rrg.drafting import MACHINE_DRAFT
from serving.launch import ServerFailedError, running_server
from serving.ui import DRAFT_FILE_NAME

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser builds cannot be downloaded here; these flags let Debian's run as root.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Where a person looks after a run: $RRG_SCREENSHOT_DIR/ui_screenshot.png, if that is set.
SCREENSHOT_DIR = os.environ.get("RRG_SCREENSHOT_DIR")
DRAFT_SECONDS = 120  # the first draft also warms the engine up


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a fresh profile; checked before the slow server starts."""
    if not CHROMIUM.exists():
        if os.environ.get("RRG_SKIP_BROWSER") == "1":
            pytest.skip(f"no Chromium at {CHROMIUM} (RRG_SKIP_BROWSER=1)")
        pytest.fail(f"no Chromium at {CHROMIUM}: run `apt-get install chromium` "
                    "(or set RRG_SKIP_BROWSER=1 to skip the browser tests)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1100}, accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def server(browser, micro_bundle, tmp_path_factory):
    """The server's base URL and its log file, once the engine is up; stopped after the module."""
    folder = tmp_path_factory.mktemp("ui-server")
    log_path = folder / "server.log"
    try:
        with running_server(micro_bundle, "hf", log_path, env={"GRADIO_TEMP_DIR": str(folder / "gradio")}) as url:
            yield url, log_path
    except ServerFailedError as error:
        pytest.fail(str(error))


@pytest.fixture
def page(browser, server) -> Page:
    url, _ = server
    page = browser.new_page()
    page.goto(url)
    yield page
    page.close()


def _phantom(micro_data) -> Path:
    return next(micro_data / r["image"] for r in read_manifest(micro_data) if r["split"] == "test")


def test_page_drafts_an_uploaded_phantom_and_downloads_the_edited_draft_labelled(page, server, micro_data, tmp_path):
    expect(page.get_by_text("not for clinical use").first).to_be_visible()
    page.locator("#upload input[type=file]").set_input_files(str(_phantom(micro_data)))
    page.get_by_role("button", name="Draft the report").click()

    cells = page.locator("#neighbors [role=gridcell]")  # prior study, distance, report per row
    expect(cells.first).to_be_visible(timeout=DRAFT_SECONDS * 1000)
    prior_study, distance, report = (cell.inner_text().strip() for cell in cells.all()[:3])
    assert prior_study and report and float(distance) >= 0
    draft_box = page.locator("#draft textarea")
    expect(draft_box).not_to_have_value("")
    draft = draft_box.input_value()
    expect(page.get_by_text("Machine draft (editable; not for clinical use)")).to_be_visible()

    edited = f"{draft} Edited by a reader."
    draft_box.fill(edited)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the draft (.txt)").click()
    assert download.value.suggested_filename == DRAFT_FILE_NAME
    first_line, *rest = Path(download.value.path()).read_text().splitlines()
    assert first_line.startswith(MACHINE_DRAFT)
    assert "\n".join(rest).strip() == edited.strip()

    screenshot = tmp_path / "ui.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(SCREENSHOT_DIR) / "ui_screenshot.png")
    _, log_path = server
    log = log_path.read_text()
    assert draft.strip()[:40] not in log and report[:40] not in log, "the server logged report text"


def test_page_says_plainly_when_a_file_is_not_an_image(page):
    page.locator("#upload input[type=file]").set_input_files(
        {"name": "bad.png", "mimeType": "image/png", "buffer": b"not an image"}
    )
    page.get_by_role("button", name="Draft the report").click()
    expect(page.get_by_text(re.compile("not a PNG, JPEG or DICOM"))).to_be_visible(timeout=DRAFT_SECONDS * 1000)
    assert "Traceback" not in page.locator("body").inner_text()
