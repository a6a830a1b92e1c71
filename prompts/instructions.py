"""The drafting prompt's text, around the visual tokens (R2GenGPT's layout, DESIGN.md section 6):

    [BOS] "Human: <Img>" [visual tokens] "</Img> <instruction>\\n<references>\\nAssistant:" -> report </s>

The language model embeds the two text parts itself; the visual tokens are placed between them.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_OPEN = "<Img>"
IMAGE_CLOSE = "</Img>"


def before_image() -> str:
    """The text ahead of the visual tokens."""
    return f"Human: {IMAGE_OPEN}"


def after_image(instruction: str, references: Sequence[str], heading: str) -> str:
    """The text after the visual tokens: the instruction, the retrieved reports, the answer cue."""
    lines = [f"{IMAGE_CLOSE} {instruction.strip()}"]
    if references:
        lines.append(heading)
        lines += [f"{i}. {' '.join(report.split())}" for i, report in enumerate(references, start=1)]
    lines.append("Assistant:")
    return "\n".join(lines)
