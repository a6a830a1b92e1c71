"""Synthetic PA chest radiographs ("phantoms") drawn from a report's findings: the demo image set.

No real images ship with the demo, so each real report is paired with a phantom showing what it
describes, where it describes it. A phantom is labelled PHANTOM on the image; it is a test bed.
"""

from rrg.demo.phantom.anatomy import Anatomy, Geometry
from rrg.demo.phantom.findings import FINDING_KINDS, PhantomFinding, findings_from_report
from rrg.demo.phantom.render import phantom_anatomy, render_phantom, render_report_phantom

__all__ = [
    "FINDING_KINDS",
    "Anatomy",
    "Geometry",
    "PhantomFinding",
    "findings_from_report",
    "phantom_anatomy",
    "render_phantom",
    "render_report_phantom",
]
