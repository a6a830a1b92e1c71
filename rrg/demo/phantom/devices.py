"""Support devices: radiopaque tubes, lines, wires and a pacemaker, each on its anatomical course.

Devices go into the `metal` layer, the densest on the film, so they render near white. Each
course follows the anatomy of this study (trachea, carina, SVC, heart, stomach), so a tube tip
lands where a radiologist would check it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from rrg.demo.phantom.anatomy import SIDE_SIGN, Anatomy
from rrg.demo.phantom.draw import smooth, stroke
from rrg.demo.phantom.findings import PhantomFinding
from rrg.demo.phantom.layers import Layers

TUBE_WIDTH = 0.006  # a radiopaque stripe or a thin line, relative


def bezier(control: list[tuple[float, float]], samples: int = 32) -> np.ndarray:
    """Points (samples, 2) of the Bezier curve through these control points: a smooth course."""
    control_points = np.asarray(control, dtype=np.float64)
    n = len(control_points) - 1
    t = np.linspace(0.0, 1.0, samples)[:, None]
    weights = [math.comb(n, k) * t**k * (1.0 - t) ** (n - k) for k in range(n + 1)]
    return sum(w * p for w, p in zip(weights, control_points))


def _add(layers: Layers, anatomy: Anatomy, paths: list[np.ndarray], width: float, value: float) -> None:
    layers.metal += value * smooth(anatomy, stroke(anatomy, paths, width), 0.001)


def endotracheal_tube(layers: Layers, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """A tube down the trachea, its radiopaque stripe ending a few centimetres above the carina."""
    g = anatomy.geometry
    tip = (g.midline + 0.003, g.carina_y - rng.uniform(0.035, 0.06))
    course = bezier([(g.midline - 0.01, -0.02), (g.midline + 0.006, g.apex_y), tip])
    _add(layers, anatomy, [course], 0.022, 0.05)  # the plastic wall: faint
    _add(layers, anatomy, [course], TUBE_WIDTH, 0.45)


def nasogastric_tube(layers: Layers, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Down the oesophagus behind the trachea, through the left hemidiaphragm, tip in the stomach."""
    g = anatomy.geometry
    dome = g.dome_y("left")
    upper = bezier(
        [(g.midline + 0.012, -0.02), (g.midline + 0.008, g.carina_y), (g.midline + 0.02, dome - 0.05)]
    )
    lower = bezier(
        [
            (g.midline + 0.02, dome - 0.05),
            (g.midline + 0.04, dome + 0.03),
            (g.midline + rng.uniform(0.12, 0.18), dome + rng.uniform(0.06, 0.09)),
        ]
    )
    _add(layers, anatomy, [np.concatenate([upper, lower])], TUBE_WIDTH, 0.7)


def central_line(layers: Layers, anatomy: Anatomy, side: str, rng: np.random.Generator) -> None:
    """A jugular or subclavian line (or PICC from the arm) whose tip lies in the SVC."""
    g = anatomy.geometry
    sign = SIDE_SIGN[side]
    tip = (g.midline - 0.035, g.carina_y + rng.uniform(0.03, 0.07))  # the SVC is on the patient's right
    if rng.random() < 0.5:  # internal jugular: down the neck
        control = [
            (g.midline + sign * 0.07, -0.02),
            (g.midline + sign * 0.06, g.clavicle_y),
            (g.midline + sign * 0.04, g.carina_y - 0.04),
            tip,
        ]
    else:  # subclavian or PICC: along the arm and under the clavicle
        control = [
            (g.midline + sign * 0.5, g.clavicle_y + 0.05),
            (g.midline + sign * 0.22, g.clavicle_y + 0.03),
            (g.midline + sign * 0.04, g.carina_y - 0.06),
            tip,
        ]
    _add(layers, anatomy, [bezier(control)], TUBE_WIDTH, 0.6)


def chest_tube(layers: Layers, anatomy: Anatomy, side: str, rng: np.random.Generator) -> None:
    """A pleural drain entering the lower lateral chest wall and curving up toward the apex."""
    g = anatomy.geometry
    sign, w = SIDE_SIGN[side], g.thorax_half_width
    entry = g.costophrenic_y(side) - rng.uniform(0.08, 0.14)
    control = [
        (g.midline + sign * (w + g.body_margin + 0.02), entry + 0.03),
        (g.midline + sign * (w - 0.02), entry),
        (g.midline + sign * 0.7 * w, g.apex_y + 0.2),
        (g.midline + sign * 0.5 * w, g.apex_y + 0.07),
    ]
    course = bezier(control)
    _add(layers, anatomy, [course], 0.014, 0.12)
    _add(layers, anatomy, [course], TUBE_WIDTH, 0.4)


def pacemaker(layers: Layers, anatomy: Anatomy, side: str, rng: np.random.Generator) -> None:
    """A generator box under the clavicle with leads through the SVC to the right atrium and ventricle."""
    g = anatomy.geometry
    sign = SIDE_SIGN[side]
    centre = np.array([g.midline + sign * rng.uniform(0.2, 0.26), g.clavicle_y + rng.uniform(0.05, 0.07)])
    half = np.array([0.045, 0.034])
    angle = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)[:, None]
    # A superellipse: the rounded-rectangle outline of a pacemaker can.
    outline = (
        np.sign(np.concatenate([np.cos(angle), np.sin(angle)], 1))
        * np.abs(np.concatenate([np.cos(angle), np.sin(angle)], 1)) ** 0.35
    )
    canvas = Image.new("F", (anatomy.size, anatomy.size), 0.0)
    pen = ImageDraw.Draw(canvas)
    pen.polygon([tuple(p) for p in anatomy.to_pixels(centre + half * outline)], fill=0.8)
    battery = centre + np.array([0.012, 0.004]) + 0.55 * half * outline
    pen.polygon([tuple(p) for p in anatomy.to_pixels(battery)], fill=1.2)  # the denser battery inside the can
    header = centre - np.array([0.0, half[1] + 0.006]) + np.array([0.03, 0.008]) * outline
    pen.polygon(
        [tuple(p) for p in anatomy.to_pixels(header)], fill=0.35
    )  # plastic header where leads plug in
    layers.metal += smooth(anatomy, np.asarray(canvas, dtype=np.float32), 0.0015)
    heart_u, heart_v = anatomy.u[anatomy.heart], anatomy.v[anatomy.heart]
    svc = (g.midline - 0.03, g.carina_y + 0.02)
    start = (centre[0] - sign * half[0], centre[1] - 0.01)
    atrium = (float(heart_u.min()) + 0.035, float(np.quantile(heart_v, 0.35)))
    ventricle = (float(heart_u.max()) - 0.05, float(heart_v.max()) - 0.03)
    to_svc = [start, (g.midline + sign * 0.06, g.clavicle_y + 0.02), svc]
    leads = [
        bezier(to_svc + [(svc[0] - 0.02, atrium[1] - 0.02), atrium]),
        bezier(to_svc + [(atrium[0], atrium[1] + 0.04), ventricle]),
    ]
    _add(layers, anatomy, leads, 0.006, 0.5)


def sternotomy_wires(layers: Layers, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """A vertical row of small twisted wire loops over the sternum (after cardiac surgery)."""
    g = anatomy.geometry
    top, bottom = g.carina_y - 0.07, 0.5 * (g.resting_dome_y("right") + g.resting_dome_y("left")) - 0.08
    theta = np.linspace(0.0, 2.0 * np.pi, 24)
    loops = []
    for height in np.linspace(top, bottom, int(rng.integers(5, 8))):
        x = g.midline + rng.normal(0.0, 0.004)
        loop = np.stack([x + 0.014 * np.cos(theta), height + 0.006 * np.sin(theta)], axis=1)
        twist = np.array([[x + 0.014, height], [x + 0.022, height + 0.004]])  # the twisted-off ends
        loops.extend([loop, twist])
    _add(layers, anatomy, loops, 0.004, 0.8)


def draw_device(layers: Layers, anatomy: Anatomy, finding: PhantomFinding, rng: np.random.Generator) -> None:
    """Draw one support device on its course."""
    side = finding.side if finding.side in SIDE_SIGN else "right"
    if finding.kind == "ett":
        endotracheal_tube(layers, anatomy, rng)
    elif finding.kind == "ng_tube":
        nasogastric_tube(layers, anatomy, rng)
    elif finding.kind == "central_line":
        central_line(layers, anatomy, side, rng)
    elif finding.kind == "chest_tube":
        chest_tube(layers, anatomy, side, rng)
    elif finding.kind == "pacemaker":
        pacemaker(layers, anatomy, finding.side if finding.side in SIDE_SIGN else "left", rng)
    elif finding.kind == "sternotomy_wires":
        sternotomy_wires(layers, anatomy, rng)
