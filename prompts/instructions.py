"""The drafting prompt's text, around the visual tokens (R2GenGPT's layout, DESIGN.md section 6):

    [BOS] "Human: <Img>" [visual tokens] "</Img> <instruction>\\n<findings>\\n<references>\\nAssistant:" -> report </s>

The findings line names the findings the image heads suggest ("none" when they suggest none).

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
    instruction: str, findings: Sequence[str], references: Sequence[str], findings_heading: str, references_heading: str
) -> str:
    """The text after the visual tokens: the instruction, the suggested findings, the retrieved
    reports, the answer cue."""
    lines = [f"{IMAGE_CLOSE} {instruction.strip()}", findings_line(findings, findings_heading)]
    if references:
        lines.append(references_heading)
        lines += [f"{i}. {' '.join(report.split())}" for i, report in enumerate(references, start=1)]
    lines.append(ANSWER_CUE)
    return "\n".join(lines)
