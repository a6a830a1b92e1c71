"""The drafting prompt's text, around the visual tokens (R2GenGPT's layout, DESIGN.md section 6):

    [BOS] "Human: <Img>" [visual tokens] "</Img> <instruction>\\n<findings>\\n<references>\\nAssistant:" -> report </s>

The findings line names the findings the image heads suggest ("none" when they suggest none). With
`prompt.findings_last` it comes after the references instead, next to the answer cue: the prompt then
ends with exactly the text the demo base model learned to continue (`report_cue`), and a small model,
which attends mostly to what is near, keeps following it (docs/ablation.md).

The demo base model learns, from report text alone, to write a report after its findings line
(`report_cue`). The language model embeds the two text parts of the prompt itself; the visual
tokens are placed between them.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_OPEN = "<Img>"
IMAGE_CLOSE = "</Img>"
ANSWER_CUE = "Assistant:"


def before_image() -> str:
    """The text ahead of the visual tokens."""
    return f"Human: {IMAGE_OPEN}"


def findings_line(findings: Sequence[str], heading: str) -> str:
    """"<heading> cardiomegaly, pleural effusion." or "<heading> none."."""
    return f"{heading} {', '.join(findings) or 'none'}."


def report_cue(findings: Sequence[str], heading: str) -> str:
    """What the demo base model reads before each report in its text-only training: the findings
    line and the answer cue of the drafting prompt, so that it learns to write what the line names."""
    return f"{findings_line(findings, heading)}\n{ANSWER_CUE}"


def after_image(
    instruction: str, findings: Sequence[str], references: Sequence[str], findings_heading: str, references_heading: str,
    findings_last: bool = False,
) -> str:
    """The text after the visual tokens: the instruction, the suggested findings, the retrieved
    reports, the answer cue; with `findings_last` the findings line comes after the reports, just
    before the answer cue, so the prompt ends as `report_cue` does."""
    lines = [f"{IMAGE_CLOSE} {instruction.strip()}"]
    if not findings_last:
        lines.append(findings_line(findings, findings_heading))
    if references:
        lines.append(references_heading)
        lines += [f"{i}. {' '.join(report.split())}" for i, report in enumerate(references, start=1)]
    lines.append(report_cue(findings, findings_heading) if findings_last else ANSWER_CUE)
    return "\n".join(lines)
