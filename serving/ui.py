"""The Gradio page: upload an X-ray, read the machine draft beside the reports it leaned on.

It calls the same `CompletionService` as the API, so the page and `POST /v1/completions` draft the
same way. A bad file gets a plain message, never a stack trace. The draft can be edited, copied, and
downloaded as a .txt whose first line says it is a machine draft, not for clinical use.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np

from rrg.generator import SamplingSettings
from serving.completions import CompletionService
from serving.heatmap import clue_overlay
from serving.protocol import APIError

DRAFT_TOKENS = 128
DRAFT_FILE_NAME = "rrg-machine-draft.txt"


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


def _preview(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


def build_ui(service: CompletionService) -> gr.Blocks:
    """The page's layout and its one action, exposed to Gradio's API as /draft."""

    async def draft(upload: str | None):
        if not upload:
            raise gr.Error("Choose an X-ray file first (PNG, JPEG or DICOM).", print_exception=False)
        # Gradio's max_file_size (the same byte limit) refuses oversize uploads before they get here.
        path = Path(upload)
        data = path.read_bytes()
        path.unlink(missing_ok=True)  # an upload is a patient's image: keep no copy on disk
        try:
            result = await service.draft(data, SamplingSettings(max_tokens=DRAFT_TOKENS))
        except APIError as error:
            raise gr.Error(error.message.removeprefix("image: "), print_exception=False) from None
        neighbors = [[n.id, round(n.distance, 4), n.report] for n in result.plan.neighbors]
        suggested = ", ".join(result.plan.suggested) or "none"
        clues = [
            (clue_overlay(result.image.pixels, c.attention), f"{c.text} (weight {c.weight:.2f})")
            for c in result.plan.clues
        ]
        return (_preview(result.image.pixels), result.generations[0].text, result.plan.findings, neighbors,
                suggested, clues)

    # Gradio caches uploads and image outputs on disk: purge them every 5 minutes, once 10 minutes old.
    with gr.Blocks(title="rrg: machine drafts of chest X-ray reports", delete_cache=(300, 600)) as page:
        gr.Markdown(banner(service))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="X-ray: PNG, JPEG or DICOM", type="filepath", elem_id="upload")
                button = gr.Button("Draft the report", variant="primary")
                preview = gr.Image(label="The image as decoded", interactive=False, type="numpy", height=320)
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
                clues = gr.Gallery(
                    label="Disease clues the model selected, and where on the image each one looked",
                    columns=3, height="auto", visible=service.has_clues,
                )
        gr.Markdown(f"<small>{service.notice}</small>")
        button.click(draft, inputs=[upload], outputs=[preview, text, findings, neighbors, suggested, clues],
                     api_name="draft")
        download.click(None, inputs=[text], js=draft_file_script(service.notice))  # in the browser only
    return page
