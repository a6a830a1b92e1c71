"""The Gradio page in a real browser: Debian's headless Chromium, driven by Playwright, against
`rrg serve --engine hf` with the micro bundle, as a person uses the page."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from rrg.data.manifest import read_manifest
from rrg.drafting import MACHINE_DRAFT
from serving.launch import ServerFailedError, running_server
from serving.ui import DRAFT_FILE_NAME, REFUSED_PAGE_ROUTES

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser builds cannot be downloaded here; these flags let Debian's run as root.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Where a person looks after a run: $RRG_SCREENSHOT_DIR/ui_screenshot.png, if that is set.
SCREENSHOT_DIR = os.environ.get("RRG_SCREENSHOT_DIR")
DRAFT_SECONDS = 120  # the first draft also warms the engine up
MAX_UPLOAD_BYTES = 256 * 1024  # the server's --max-upload-mb 0.25: the micro phantoms are far smaller


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
    """The server's base URL, its log file and Gradio's cache folder, once the engine is up; stopped
    after the module."""
    folder = tmp_path_factory.mktemp("ui-server")
    log_path, gradio_files = folder / "server.log", folder / "gradio"
    try:
        with running_server(micro_bundle, "hf", log_path, env={"GRADIO_TEMP_DIR": str(gradio_files)},
                            options=["--max-upload-mb", str(MAX_UPLOAD_BYTES / 2**20)]) as url:
            yield url, log_path, gradio_files
    except ServerFailedError as error:
        pytest.fail(str(error))


@pytest.fixture
def requested() -> list[str]:
    """The path (and query) of every request the page makes, in order."""
    return []


@pytest.fixture
def script_errors() -> list[str]:
    """The errors the page's scripts raise (the file chooser's among them)."""
    return []


@pytest.fixture
def page(browser, server, requested, script_errors) -> Page:
    url, _, _ = server
    page = browser.new_page()
    page.on("request", lambda request: requested.append(_path(request.url)))
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(url)
    yield page
    page.close()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _phantom(micro_data) -> Path:
    return next(micro_data / r["image"] for r in read_manifest(micro_data) if r["split"] == "test")


def _holding(folder: Path, image: bytes) -> list[Path]:
    """The files under `folder` that hold the image's bytes, raw or base64-encoded."""
    encoded = base64.b64encode(image)
    return [p for p in folder.rglob("*") if p.is_file() and (image in p.read_bytes() or encoded in p.read_bytes())]


def _choose(page: Page, file) -> None:
    """Choose a file as a person does, and wait until the browser has read it (or refused it)."""
    page.locator("#upload input[type=file]").set_input_files(file)
    expect(page.locator("#upload .rrg-upload-status")).not_to_contain_text(re.compile("No file chosen|Reading"))


def _draft(page: Page) -> None:
    page.get_by_role("button", name="Draft the report").click()
    expect(page.locator("#neighbors [role=gridcell]").first).to_be_visible(timeout=DRAFT_SECONDS * 1000)


def test_page_drafts_a_chosen_phantom_and_downloads_the_edited_draft_labelled(
    page, server, requested, script_errors, micro_data, tmp_path,
):
    _, log_path, gradio_files = server
    phantom = _phantom(micro_data)
    expect(page.get_by_text("not for clinical use").first).to_be_visible()
    _choose(page, str(phantom))
    expect(page.locator("#upload .rrg-upload-status")).to_have_text(re.compile(re.escape(phantom.name) + r" \(\d"))
    _draft(page)

    cells = page.locator("#neighbors [role=gridcell]")  # prior study, distance, report per row
    prior_study, distance, report = (cell.inner_text().strip() for cell in cells.all()[:3])
    assert prior_study and report and float(distance) >= 0
    draft_box = page.locator("#draft textarea")
    expect(draft_box).not_to_have_value("")
    draft = draft_box.input_value()
    expect(page.get_by_text("Machine draft (editable; not for clinical use)")).to_be_visible()
    preview = page.locator("#preview img")
    expect(preview).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert preview.evaluate("image => image.complete && image.naturalWidth") > 0  # it decoded and shows

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
    log = log_path.read_text()
    assert draft.strip()[:40] not in log and report[:40] not in log, "the server logged report text"

    paths = sorted({p.split("?")[0] for p in requested})
    print("requests the page made (pytest -s shows them):", *paths, sep="\n  ")
    assert "/gradio_api/queue/join" in paths  # the draft went through Gradio's queue, with the image in it
    assert not [p for p in requested if p.startswith(REFUSED_PAGE_ROUTES)]
    kept = _holding(gradio_files, phantom.read_bytes())
    assert not kept, f"the server kept the uploaded image: {kept}"
    assert not script_errors


def test_page_says_plainly_when_a_file_is_not_an_image(page, script_errors):
    _choose(page, {"name": "bad.png", "mimeType": "image/png", "buffer": b"not an image"})
    expect(page.locator("#upload .rrg-upload-status")).to_have_text("bad.png (12 bytes)")
    page.get_by_role("button", name="Draft the report").click()
    expect(page.get_by_text(re.compile("not a PNG, JPEG or DICOM"))).to_be_visible(timeout=DRAFT_SECONDS * 1000)
    assert "Traceback" not in page.locator("body").inner_text()
    assert not script_errors


def test_page_refuses_a_file_over_the_limit_without_reading_or_sending_it(page, requested):
    _choose(page, {"name": "huge.dcm", "mimeType": "application/dicom", "buffer": bytes(MAX_UPLOAD_BYTES + 1)})
    expect(page.locator("#upload .rrg-upload-status")).to_have_text(
        f"huge.dcm (256.0 kB) is larger than the limit of {MAX_UPLOAD_BYTES:,} bytes: choose another file."
    )
    page.get_by_role("button", name="Draft the report").click()
    expect(page.get_by_text("Choose an X-ray file first")).to_be_visible(timeout=DRAFT_SECONDS * 1000)


def test_the_browser_keeps_no_copy_of_the_image_after_drafting(page, micro_data):
    phantom = _phantom(micro_data)
    _choose(page, str(phantom))
    _draft(page)
    encoded = base64.b64encode(phantom.read_bytes()).decode()
    stored = page.evaluate("() => [localStorage, sessionStorage].map(s => JSON.stringify({...s})).join()")
    kept = encoded[:200] in stored
    assert not kept, "the browser's storage holds the image (Gradio's run history: mount the page with run_history=False)"


def test_gradios_upload_and_file_routes_answer_404_and_store_nothing(server, micro_data):
    url, _, gradio_files = server
    image = _phantom(micro_data).read_bytes()
    uploaded = httpx.post(f"{url}/gradio_api/upload", files={"files": ("x.png", image, "image/png")}, timeout=30)
    assert uploaded.status_code == 404
    assert not _holding(gradio_files, image)
    for route in REFUSED_PAGE_ROUTES:
        assert httpx.get(f"{url}{route}probe", timeout=30).status_code == 404, route
