"""The Gradio page: choose an X-ray, read the machine draft beside the reports it leaned on.

It calls the same `CompletionService` as the API, so the page and `POST /v1/completions` draft the
same way. A bad file (or a busy server, an engine that is down) gets the handler's error message,
plain, never a stack trace. The draft can be edited, copied, and downloaded as a .txt whose first
line says it is a machine draft, not for clinical use.

No image is ever a file on the server. The browser reads the chosen file itself and sends it as a
data URL with the draft request (there is no Gradio upload), and the decoded image and the clue
overlays come back as PNG data URLs inside HTML (there is no file in Gradio's cache to serve). Gradio's
routes that store or serve files, which this page does not use, are listed in `REFUSED_PAGE_ROUTES`
for the server to answer 404 before Gradio sees them.
"""

from __future__ import annotations

import base64
import html
import io
import json

import gradio as gr
import numpy as np
from PIL import Image

from rrg.model.generation import SamplingSettings
from serving.completions import CompletionService, image_bytes
from serving.heatmap import clue_overlay
from serving.protocol import APIError

DRAFT_TOKENS = 128
DRAFT_FILE_NAME = "rrg-machine-draft.txt"
PREVIEW_SIDE = 1024  # the preview checks the decoding (orientation, windowing); it is not for reading
ACCEPTED_FILES = ".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom"
PAGE_SESSIONS_KEPT = 4

# Gradio routes (the router is mounted under /gradio_api) that store an upload on disk or serve a file,
# a stream or a proxied URL, and that this page never calls (tests/serving/test_ui_browser.py records
# every request the page makes). The server answers them 404 so that no client can park a file on
# its disk or read one back.
REFUSED_PAGE_ROUTES: tuple[str, ...] = (
    "/gradio_api/upload",  # writes the file into the cache folder (also /upload_progress)
    "/gradio_api/file=",  # serves files from the cache folder, or streams a URL
    "/gradio_api/file/",  # the same, under its old name
    "/gradio_api/proxy=",  # reverse proxy to Hugging Face Spaces
    "/gradio_api/stream/",  # streamed inputs and outputs, and media segments from the cache
    "/gradio_api/process_recording",  # writes recorded audio or video into the cache
    "/gradio_api/component_server",  # server functions of components; takes multipart files
    "/gradio_api/deep_link",  # writes a session's inputs and outputs to disk as state.json
    "/gradio_api/run-history/",  # run history kept in a Hugging Face bucket, and its assets
    "/gradio_api/runs",  # the run history page
    "/gradio_api/custom_component/",  # files of installed custom components; the page has none
)


def banner(service: CompletionService) -> str:
    """The warning at the top of the page."""
    lines = [
        "## rrg: draft a chest X-ray report",
        f"> ⚠️ **{service.notice}**",
        ">",
        ("> A radiologist must read the image and write the report; this text is a starting point for "
         "research and engineering only."),
    ]
    return "\n".join(lines)


def draft_file_script(notice: str) -> str:
    """Browser code that saves the draft box's current text, edits included, as a .txt file whose
    first line is the notice.

    The browser builds the file itself: the server writes no copy of the report, and the file
    always holds what the box holds at the click, with no round trip that an edit could race.
    """
    return f"""(draft) => {{
        const link = document.createElement("a");
        const file = new Blob([{json.dumps(notice)} + "\\n\\n" + (draft ?? "")], {{type: "text/plain;charset=utf-8"}});
        link.href = URL.createObjectURL(file);
        link.download = {json.dumps(DRAFT_FILE_NAME)};
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    }}"""


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MB"


def upload_template(max_bytes: int) -> str:
    """The file chooser. Gradio evaluates the template as handlebars and then as a JS template
    string, so it holds no `{{`, `${` or backquote, and no value the browser changes: the status line
    is written by `UPLOAD_SCRIPT`, and a template that never changes is never re-rendered over it."""
    return f"""<div class="rrg-upload">
  <label class="rrg-upload-label" for="rrg-upload-file">X-ray: PNG, JPEG or DICOM</label>
  <input id="rrg-upload-file" type="file" accept="{ACCEPTED_FILES}">
  <p class="rrg-upload-status" role="status" aria-live="polite">No file chosen. Up to {_megabytes(max_bytes)}; the
  file is read in this browser and sent only with the draft request.</p>
</div>"""


UPLOAD_CSS = """
.rrg-upload { border: 1px dashed var(--border-color-primary); border-radius: var(--block-radius);
  background: var(--block-background-fill); padding: var(--block-padding); }
.rrg-upload-label { display: block; font-size: var(--block-label-text-size); color: var(--block-label-text-color);
  margin-bottom: var(--spacing-md); }
.rrg-upload input { width: 100%; color: var(--body-text-color); }
.rrg-upload-status { margin: var(--spacing-md) 0 0; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
.rrg-upload-status.rrg-refused { color: var(--error-text-color); }
"""

# Runs once when the component mounts. The listener sits on `element` and picks the file input out by
# event delegation, so it keeps working if Gradio re-renders the template. A file over the server's limit
# is refused here, unread: the server would refuse it anyway, after the whole upload.
UPLOAD_SCRIPT = """
const maxBytes = props.max_bytes;
let reading = null;
const size = (n) => n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : n >= 1024 ? (n / 1024).toFixed(1) + " kB" : n + " bytes";
const say = (text, refused) => {
  const line = element.querySelector(".rrg-upload-status");
  line.textContent = text;
  line.classList.toggle("rrg-refused", Boolean(refused));
};
const settle = (value, text, refused) => {
  reading = null;
  props.value = value;
  say(text, refused);
  trigger("change");
};
element.addEventListener("change", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.type !== "file") return;
  if (reading) reading.abort();
  const file = input.files && input.files[0];
  if (!file) return settle("", "No file chosen.");
  const named = `${file.name} (${size(file.size)})`;
  if (file.size === 0 || file.size > maxBytes) {
    input.value = "";
    const why = file.size === 0 ? "is empty" : `is larger than the limit of ${maxBytes.toLocaleString("en-US")} bytes`;
    return settle("", `${named} ${why}: choose another file.`, true);
  }
  props.value = "";
  say(`Reading ${named}…`);
  const reader = new FileReader();
  reading = reader;
  reader.onload = () => { if (reading === reader) settle(reader.result, named); };
  reader.onerror = () => {
    if (reading !== reader) return;
    input.value = "";
    settle("", `${named} could not be read: choose it again.`, true);
  };
  reader.readAsDataURL(file);
});
"""

IMAGE_CSS = """
img { display: block; width: 100%; height: 320px; object-fit: contain; margin-top: var(--size-8); }
.rrg-empty { color: var(--body-text-color-subdued); font-size: var(--text-sm); margin: var(--size-8) 0 var(--spacing-lg); }
"""

CLUES_CSS = """
.rrg-clues { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: var(--spacing-lg);
  margin-top: var(--size-8); }
figure { margin: 0; }
img { display: block; width: 100%; height: auto; }
figcaption { font-size: var(--text-sm); margin-top: var(--spacing-sm); }
"""

NO_PREVIEW = '<p class="rrg-empty">The image as the server decoded it appears here after drafting.</p>'


def _preview(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


def png_data_url(pixels: np.ndarray, max_side: int | None = None) -> str:
    """A uint8 grayscale or RGB image as a PNG data URL, encoded in memory (no file, no cache entry)."""
    image = Image.fromarray(pixels)
    if max_side is not None:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def preview_html(pixels: np.ndarray) -> str:
    """The decoded image, as the page shows it."""
    return f'<img src="{png_data_url(_preview(pixels), PREVIEW_SIDE)}" alt="The X-ray as the server decoded it">'


def clues_html(pixels: np.ndarray, clues) -> str:
    """Each selected clue's heat map over the image, captioned with its text and weight."""
    if not clues:
        return ""
    figures = [
        f'<figure><img src="{png_data_url(clue_overlay(pixels, c.attention))}" alt="Where the clue looked">'
        f"<figcaption>{html.escape(f'{c.text} (weight {c.weight:.2f})')}</figcaption></figure>"
        for c in clues
    ]
    return f'<div class="rrg-clues">{"".join(figures)}</div>'


def _plain(message: str) -> str:
    """An API error message as the page says it: no field name, a capital first letter."""
    message = message.removeprefix("image: ")
    return message[:1].upper() + message[1:]


def build_ui(service: CompletionService) -> gr.Blocks:
    """The page's layout and its one action, exposed to Gradio's API as /draft (its input: the
    image as a data URL or base64, as `image` in `POST /v1/completions`)."""

    async def draft(upload: str | None):
        if not upload:
            raise gr.Error("Choose an X-ray file first (PNG, JPEG or DICOM).", print_exception=False)
        try:
            data = image_bytes(upload, service.limits)  # refused over the byte limit, before decoding
            result = await service.draft(data, SamplingSettings(max_tokens=DRAFT_TOKENS))
        except APIError as error:  # every kind the handler raises says what went wrong, in words
            raise gr.Error(_plain(error.message), print_exception=False) from None
        neighbors = [[n.id, round(n.distance, 4), n.report] for n in result.plan.neighbors]
        suggested = ", ".join(result.plan.suggested) or "none"
        pixels = result.image.pixels
        return (preview_html(pixels), result.generations[0].text, result.plan.findings, neighbors, suggested,
                clues_html(pixels, result.plan.clues))

    # Nothing on this page is a file (see the module docstring), so Gradio's cache needs no sweep.
    with gr.Blocks(title="rrg: machine drafts of chest X-ray reports") as page:
        gr.Markdown(banner(service))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.HTML(
                    "", html_template=upload_template(service.limits.max_bytes), css_template=UPLOAD_CSS,
                    js_on_load=UPLOAD_SCRIPT, max_bytes=service.limits.max_bytes, elem_id="upload",
                    label="X-ray (data URL)",
                )
                button = gr.Button("Draft the report", variant="primary")
                preview = gr.HTML(NO_PREVIEW, label="The image as decoded", show_label=True, container=True,
                                  css_template=IMAGE_CSS, js_on_load=None, elem_id="preview")
            with gr.Column(scale=2):
                text = gr.Textbox(
                    label="Machine draft (editable; not for clinical use)", lines=8, interactive=True,
                    buttons=["copy"], elem_id="draft",
                )
                download = gr.Button("Download the draft (.txt)", size="sm")
                # no heading: the top label in large type would read as a diagnosis
                findings = gr.Label(label="Predicted findings (probability)", num_top_classes=6, show_heading=False)
                suggested = gr.Textbox(label="Findings named in the prompt (above the bundle's thresholds)")
                neighbors = gr.Dataframe(
                    headers=["prior study", "distance", "report"], label="Retrieved prior reports",
                    interactive=False, wrap=True, column_widths=["20%", "14%", "66%"], elem_id="neighbors",
                )
                clues = gr.HTML(
                    "", label="Disease clues the model selected, and where on the image each one looked",
                    show_label=True, container=True, css_template=CLUES_CSS, js_on_load=None,
                    visible=service.has_clues, elem_id="clues",
                )
        gr.Markdown(f"<small>{service.notice}</small>")
        button.click(draft, inputs=[upload], outputs=[preview, text, findings, neighbors, suggested, clues],
                     api_name="draft")
        download.click(None, inputs=[text], js=draft_file_script(service.notice))  # in the browser only
    # Gradio keeps each session's last inputs and outputs (the image's data URL, the draft) in memory for
    # its deep links, which the server refuses; the page needs none of it, so only a few sessions' stay.
    page.state_session_capacity = PAGE_SESSIONS_KEPT
    return page
