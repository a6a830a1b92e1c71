"""The bones of a PA chest film: posterior and anterior ribs, clavicles, spine, humeral heads.

Bones are drawn as added density (bright). A fracture is a change of the bone's path (a gap and
a step between fragments), so it is drawn here from `Geometry.rib_breaks` / `clavicle_breaks`.
"""

from __future__ import annotations

import numpy as np

from rrg.demo.phantom.anatomy import RIB_COUNT, SIDE_SIGN, Anatomy, Geometry, lateral_wall
from rrg.demo.phantom.draw import soft_disk, stroke

RIB_WIDTH = 0.019
CLAVICLE_WIDTH = 0.024
FRACTURE_GAP = 0.016  # relative length of bone missing at a fracture line


def rib_level(g: Geometry, index: int) -> float:
    """Height where posterior rib `index` (0 = first) leaves the spine."""
    top = g.apex_y - 0.035
    bottom = 0.5 * (g.resting_dome_y("right") + g.resting_dome_y("left")) + 0.01
    return top + index * ((bottom - top) / (RIB_COUNT - 1) + g.rib_spacing_jitter)


def posterior_rib(g: Geometry, side: str, index: int, samples: int = 24) -> np.ndarray:
    """Patient-frame path of a posterior rib: out from the spine, arching up, curving down laterally."""
    sign, y0 = SIDE_SIGN[side], rib_level(g, index)
    reach = float(lateral_wall(g, side, np.float32(y0 + 0.03))) + 0.012
    t = np.linspace(0.0, 1.0, samples)
    arch = 0.06 - 0.002 * index  # the upper ribs are the more curved
    d = 0.028 + t * (reach - 0.028)
    v = y0 - arch * np.sin(np.pi * 0.8 * t) + 0.09 * t**2.5
    return np.stack([g.midline + sign * d, v], axis=1)


def anterior_rib(posterior: np.ndarray, g: Geometry, side: str, samples: int = 16) -> np.ndarray:
    """Anterior rib continuing from the lateral end of its posterior rib, down and in to the cartilage."""
    sign = SIDE_SIGN[side]
    end_d, end_v = sign * (posterior[-1, 0] - g.midline), posterior[-1, 1]
    t = np.linspace(0.0, 1.0, samples)
    d = end_d - t * (end_d - 0.11)
    v = end_v + 0.025 * np.sin(0.5 * np.pi * np.clip(t * 3.0, 0.0, 1.0)) + 0.10 * t
    return np.stack([g.midline + sign * d, v], axis=1)


def clavicle(g: Geometry, side: str, samples: int = 20) -> np.ndarray:
    """Patient-frame path of a clavicle: from the sternal notch out and up to the acromion (an S)."""
    t = np.linspace(0.0, 1.0, samples)
    d = 0.03 + 0.31 * t
    v = g.clavicle_y + 0.012 - 0.05 * t + 0.012 * np.sin(2.0 * np.pi * t)
    return np.stack([g.midline + SIDE_SIGN[side] * d, v], axis=1)


def _arc_length(path: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])


def point_along(path: np.ndarray, at: float) -> tuple[float, float]:
    """The point at fraction `at` of a path's length."""
    length = _arc_length(path)
    position = at * length[-1]
    return float(np.interp(position, length, path[:, 0])), float(np.interp(position, length, path[:, 1]))


def break_path(path: np.ndarray, at: float, step: float) -> list[np.ndarray]:
    """Split a bone path at fraction `at` of its length: a gap, and the distal fragment stepped down."""
    length = _arc_length(path)
    position = at * length[-1]
    proximal = path[length < position - FRACTURE_GAP / 2]
    distal = path[length > position + FRACTURE_GAP / 2] + np.array([0.0, step])
    return [fragment for fragment in (proximal, distal) if len(fragment) >= 2]


def bone_paths(g: Geometry) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(posterior rib, anterior rib, clavicle) paths of both sides, fractures applied."""
    posterior, anterior, clavicles = [], [], []
    breaks = {(side, index): (at, step) for side, index, at, step in g.rib_breaks}
    for side in SIDE_SIGN:
        for index in range(RIB_COUNT):
            rib = posterior_rib(g, side, index)
            anterior.append(anterior_rib(rib, g, side))
            if (side, index) in breaks:
                posterior.extend(break_path(rib, *breaks[(side, index)]))
            else:
                posterior.append(rib)
        bone = clavicle(g, side)
        steps = [step for broken_side, step in g.clavicle_breaks if broken_side == side]
        clavicles.extend(break_path(bone, 0.5, steps[0]) if steps else [bone])
    return posterior, anterior, clavicles


def _cortical_band(anatomy: Anatomy, paths: list[np.ndarray], width: float) -> np.ndarray:
    """A bone band whose margins (cortex) are brighter than its middle (medulla)."""
    outer = stroke(anatomy, paths, width)
    inner_width = width - 2.5 / anatomy.size
    if inner_width * anatomy.size < 1.5:
        return outer
    inner = stroke(anatomy, paths, inner_width)
    return outer - 0.35 * inner


def spine(anatomy: Anatomy) -> np.ndarray:
    """Thoracic vertebral bodies with disc spaces and paired pedicles, faint through the mediastinum."""
    g = anatomy.geometry
    offset = np.abs(anatomy.u - g.midline)
    period = 0.047
    phase = np.mod(anatomy.v - g.apex_y, period) / period  # 0..1 within one vertebra
    body = np.clip((0.034 - offset) * anatomy.size, 0.0, 1.0)
    disc = np.exp(-(((phase - 0.95) / 0.06) ** 2)) + np.exp(-(((phase + 0.05) / 0.06) ** 2))
    pedicles = np.exp(-(((offset - 0.024) / 0.006) ** 2 + ((phase - 0.4) / 0.14) ** 2))
    return body * (0.75 - 0.45 * disc) + 0.6 * pedicles * (offset < 0.034)


def skeleton(anatomy: Anatomy) -> np.ndarray:
    """Bone density of the whole chest (bones only; add to the soft tissue)."""
    g = anatomy.geometry
    posterior, anterior, clavicles = bone_paths(g)
    bone = 0.065 * _cortical_band(anatomy, posterior, RIB_WIDTH)
    bone += 0.025 * stroke(anatomy, anterior, RIB_WIDTH * 0.8)  # anterior ribs: thin, faint
    bone += 0.16 * _cortical_band(anatomy, clavicles, CLAVICLE_WIDTH)
    bone += 0.07 * spine(anatomy)
    for sign in SIDE_SIGN.values():
        # Humeral heads at the field's upper corners, mostly outside it.
        centre = (g.midline + sign * (g.thorax_half_width + g.body_margin + 0.1), g.clavicle_y + 0.02)
        head = soft_disk(anatomy, centre, 0.075)
        bone += 0.09 * head + 0.06 * (head - soft_disk(anatomy, centre, 0.066))
    return bone * anatomy.body
