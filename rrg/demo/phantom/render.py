"""Compose a phantom radiograph: anatomy, findings, exposure, quantum noise, markers.

Every random choice is seeded from the study id and what it is for (anatomy, markings,
exposure, noise, each finding) and never from the findings list, so a study rendered with and
without a finding differs only where the finding is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rrg.demo.phantom.anatomy import Anatomy, build_anatomy, sample_geometry, study_rng
from rrg.demo.phantom.draw import smooth
from rrg.demo.phantom.findings import PhantomFinding, findings_from_report
from rrg.demo.phantom.layers import normal_layers
from rrg.demo.phantom.pathology import adjust_geometry, draw_finding

MIN_SIZE, MAX_SIZE = 32, 2048
LABEL = "PHANTOM"


def phantom_anatomy(study_id: str, size: int = 256, findings: Sequence[PhantomFinding] = ()) -> Anatomy:
    """The geometry a phantom of this study is drawn on (with the anatomy the findings change)."""
    _check_size(size)
    return build_anatomy(adjust_geometry(sample_geometry(study_id), findings, study_id), size)


def render_phantom(study_id: str, findings: Sequence[PhantomFinding], size: int = 256) -> np.ndarray:
    """A synthetic PA chest radiograph (uint8, size x size) of this study showing these findings."""
    anatomy = phantom_anatomy(study_id, size, findings)
    layers = normal_layers(anatomy, study_id)
    for finding in findings:
        draw_finding(layers, anatomy, finding, study_id)
    image = expose(anatomy, layers.density(), study_id)
    return add_markers(image)


def render_report_phantom(study_id: str, labels: dict, triplets: list[dict], size: int = 256) -> np.ndarray:
    """The phantom of a report: its labels and triplets read into findings, then rendered."""
    return render_phantom(study_id, findings_from_report(study_id, labels, triplets), size)


def expose(anatomy: Anatomy, density: np.ndarray, study_id: str) -> np.ndarray:
    """Detector response: unsharpness, exposure and contrast of this study, quantum noise; float 0..1."""
    exposure = study_rng(study_id, "exposure")
    gain = exposure.uniform(1.6, 2.0)  # beam hardness/contrast
    black = exposure.uniform(0.0, 0.05)
    gamma = exposure.uniform(0.85, 1.1)
    noise_level = exposure.uniform(0.010, 0.022)
    density = smooth(anatomy, density, 0.0022)
    # Brightness saturates with attenuation (Beer-Lambert), normalised to dense mediastinum plus bone.
    signal = (1.0 - np.exp(-gain * np.clip(density, 0.0, None))) / (1.0 - np.exp(-gain * 1.25))
    signal = black + (1.0 - black) * np.clip(signal, 0.0, 1.2) ** gamma
    noise = smooth(
        anatomy, study_rng(study_id, "noise").standard_normal(density.shape).astype(np.float32), 0.0015
    )
    noise /= noise.std() + 1e-6
    # Bright areas received fewer photons, so their relative noise is higher.
    return np.clip(signal + noise_level * (0.6 + 0.8 * signal) * noise, 0.0, 1.0)


@lru_cache(maxsize=8)
def _text_stamp(text: str, height: int) -> np.ndarray:
    """White text on black, `height` pixels tall (the default font, scaled)."""
    font = ImageFont.load_default()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    width = max(1, round(canvas.width * height / canvas.height))
    return np.asarray(canvas.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0


def _stamp(image: np.ndarray, stamp: np.ndarray, top: int, left: int) -> None:
    height, width = stamp.shape
    height, width = min(height, image.shape[0] - top), min(width, image.shape[1] - left)
    # A dark backing plate, like the lead marker's holder, keeps the text legible on any background.
    pad = max(1, height // 5)
    image[max(0, top - pad) : top + height + pad, max(0, left - pad) : left + width + pad] *= 0.15
    region = image[top : top + height, left : left + width]
    np.maximum(region, 0.95 * stamp[:height, :width], out=region)


def add_markers(image: np.ndarray) -> np.ndarray:
    """Laterality marker (R on the patient's right, the image left) and the PHANTOM label; to uint8."""
    size = image.shape[0]
    image = image.copy()
    marker = _text_stamp("R", max(5, round(0.06 * size)))
    _stamp(image, marker, round(0.03 * size), round(0.035 * size))
    label = _text_stamp(LABEL, max(5, round(0.035 * size)))
    _stamp(
        image, label, size - label.shape[0] - round(0.02 * size), size - label.shape[1] - round(0.02 * size)
    )
    return np.round(image * 255.0).astype(np.uint8)


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"phantom size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
