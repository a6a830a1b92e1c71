"""Drawing each disease finding the way a radiologist expects to see it on a PA film.

Findings that change the anatomy itself (a big heart, a wide mediastinum, volume loss lifting a
hemidiaphragm, a broken rib) do so through `adjust_geometry`; the rest add to the density
layers in `draw_finding`. Each finding has its own generator (study id + kind + side + zone),
so adding one finding never moves another, nor the normal anatomy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.random import Generator
from scipy import ndimage

from rrg.demo.phantom.anatomy import RIB_COUNT, Anatomy, Geometry, lateral_wall, study_rng
from rrg.demo.phantom.devices import draw_device
from rrg.demo.phantom.draw import smooth, smoothstep, soft_disk, stroke, texture
from rrg.demo.phantom.findings import DEVICE_KINDS, PhantomFinding
from rrg.demo.phantom.layers import Layers
from rrg.demo.phantom.skeleton import clavicle, point_along, posterior_rib

# Posterior ribs that lie in each lung zone, for placing a fracture.
RIBS_IN_ZONE = {
    "apical": (1, 2),
    "upper": (2, 3, 4),
    "mid": (4, 5, 6),
    "lower": (6, 7, 8),
    "basal": (7, 8),
    "whole": (3, 4, 5, 6, 7),
}


def finding_rng(study_id: str, finding: PhantomFinding) -> Generator:
    """The generator of one finding: its own, so findings never shift each other's draws."""
    return study_rng(study_id, f"finding:{finding.kind}:{finding.side}:{finding.zone}")


def adjust_geometry(g: Geometry, findings: Sequence[PhantomFinding], study_id: str) -> Geometry:
    """The geometry with the anatomical changes the findings make."""
    for f in findings:
        rng = finding_rng(study_id, f)
        if f.kind == "cardiomegaly":  # CTR above 0.55 even when mild
            g = dataclasses.replace(g, heart_ctr=max(g.heart_ctr, 0.57 + 0.11 * f.severity))
        elif f.kind == "widened_mediastinum":
            g = dataclasses.replace(g, mediastinum_scale=max(g.mediastinum_scale, 1.5 + 0.5 * f.severity))
        elif f.kind == "atelectasis" and f.zone in ("lower", "basal"):  # volume loss lifts the dome
            lift = 0.012 + 0.02 * f.severity
            right, left = g.diaphragm_raise
            g = dataclasses.replace(
                g, diaphragm_raise=(right + lift * ("right" in f.sides), left + lift * ("left" in f.sides))
            )
        elif f.kind == "hyperinflation":
            g = dataclasses.replace(g, hyperinflation=max(g.hyperinflation, f.severity))
        elif f.kind == "rib_fracture":
            g = dataclasses.replace(g, rib_breaks=g.rib_breaks + _rib_breaks(f, rng))
        elif f.kind == "clavicle_fracture":
            breaks = tuple((side, 0.01 + 0.01 * f.severity) for side in f.sides)
            g = dataclasses.replace(g, clavicle_breaks=g.clavicle_breaks + breaks)
    return g


def _rib_breaks(f: PhantomFinding, rng: Generator) -> tuple[tuple[str, int, float, float], ...]:
    """One break per side: a rib of the zone, broken in its lateral part, the distal fragment stepped."""
    step = 0.01 + 0.01 * f.severity
    return tuple(
        (side, int(rng.choice(RIBS_IN_ZONE[f.zone])) % RIB_COUNT, rng.uniform(0.55, 0.85), step)
        for side in f.sides
    )


def draw_finding(layers: Layers, anatomy: Anatomy, finding: PhantomFinding, study_id: str) -> None:
    """Add one finding to the layers (anatomical findings are already in the geometry)."""
    rng = finding_rng(study_id, finding)
    if finding.kind in DEVICE_KINDS:
        draw_device(layers, anatomy, finding, rng)
        return
    draw = LUNG_DRAWERS.get(finding.kind)
    if draw is not None:
        for side in finding.sides or ("left",):
            draw(layers, anatomy, finding, side, rng)
    elif finding.kind == "hyperinflation":
        # More air and fewer, thinner vessels across both lungs.
        layers.air *= 1.0 + 0.12 * finding.severity
        layers.markings *= 1.0 - 0.35 * finding.severity
    elif finding.kind == "hiatal_hernia":
        hiatal_hernia(layers, anatomy, finding)
    elif finding.kind in ("rib_fracture", "clavicle_fracture"):
        fracture_callus(layers, anatomy, finding)


def _fill(layers: Layers, amount: np.ndarray) -> None:
    np.maximum(layers.fill, amount, out=layers.fill)


def _lung_soft(anatomy: Anatomy, side: str) -> np.ndarray:
    return anatomy.soft_lung(side)


def _zone_soft(anatomy: Anatomy, side: str, zone: str, sigma: float = 0.01) -> np.ndarray:
    """The zone with blurred borders, kept inside its lung."""
    return smooth(anatomy, anatomy.zone(side, zone), sigma) * _lung_soft(anatomy, side)


def _sphere(anatomy: Anatomy, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Projected thickness of a sphere (1 at its centre): round lesions shade to their edge."""
    distance = np.hypot(anatomy.u - centre[0], anatomy.v - centre[1])
    edge = 1.0 / anatomy.size
    return np.sqrt(np.clip(1.0 - (distance / (radius + edge)) ** 2, 0.0, 1.0))


def _point_in(anatomy: Anatomy, side: str, zone: str, margin: float, rng: Generator) -> tuple[float, float]:
    """A random patient-frame point in the zone at least `margin` inside its lung."""
    lung = anatomy.lung(side)
    inside = ndimage.distance_transform_edt(lung) > anatomy.pixels(margin)
    candidates = np.flatnonzero(anatomy.zone(side, zone) & inside)
    if candidates.size == 0:
        candidates = (
            np.flatnonzero(anatomy.zone(side, zone))
            if anatomy.zone(side, zone).any()
            else np.flatnonzero(lung)
        )
    pick = candidates[rng.integers(candidates.size)]
    return float(anatomy.u.flat[pick]), float(anatomy.v.flat[pick])


# --- pleura ----------------------------------------------------------------------------------


def pleural_effusion(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """Dependent fluid: a meniscus rising laterally, the costophrenic angle and dome blotted out."""
    g = anatomy.geometry
    d = anatomy.lateral_distance(side)
    height = 0.03 + 0.2 * f.severity  # fluid depth above the costophrenic angle, medially
    meniscus = 0.04 + 0.06 * f.severity  # extra rise along the lateral chest wall
    lateral = np.clip((d / g.thorax_half_width - 0.2) / 0.8, 0.0, 1.0)
    level = g.costophrenic_y(side) - height - meniscus * lateral**1.8
    # The layer thins toward its top, so the upper edge fades rather than stops.
    fluid = smoothstep((anatomy.v - level) / (0.03 + 0.02 * f.severity))
    _fill(layers, fluid * _lung_soft(anatomy, side))


def pneumothorax(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """Air between lung and wall: apical-lateral lucency without markings, a thin visceral pleural line."""
    g = anatomy.geometry
    lung = _lung_soft(anatomy, side)
    wall = anatomy.wall_distance(side)
    height = np.clip((anatomy.v - g.apex_y) / (g.dome_y(side) - g.apex_y), 0.0, 1.0)
    # Upright patient: the air collects at the apex, the rim narrows toward the base.
    gap = (0.025 + 0.075 * f.severity) * (1.0 - 0.85 * height)
    space = np.clip((gap - wall) * anatomy.size + 0.5, 0.0, 1.0) * lung
    layers.markings *= 1.0 - space
    layers.air += 0.12 * space
    line_width = max(0.7 / anatomy.size, 0.0022)
    pleural_line = np.exp(-(((wall - gap) / line_width) ** 2)) * (gap > 0.008) * anatomy.lung(side)
    layers.extra += 0.11 * pleural_line
    _fill(layers, 0.1 * f.severity * lung * (1.0 - space))  # the collapsed lung is a little denser


def pleural_thickening(
    layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator
) -> None:
    """A soft-tissue band along the lateral chest wall or capping the apex."""
    thickness = 0.014 + 0.016 * f.severity
    band = np.clip((thickness - anatomy.wall_distance(side)) * anatomy.size + 0.5, 0.0, 1.0)
    region = _zone_soft(anatomy, side, f.zone, sigma=0.02) if f.zone != "whole" else _lung_soft(anatomy, side)
    _fill(layers, 0.9 * band * region)


# --- airspace and interstitium ------------------------------------------------------------------


def consolidation(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """Dense, nearly homogeneous filling of the named lobe/zone, with a few air bronchograms."""
    # The right upper lobe stops at the horizontal fissure (a sharp edge); other lobes fade.
    region = _zone_soft(anatomy, side, f.zone, 0.006 if (side, f.zone) == ("right", "upper") else 0.018)
    mottle = texture(anatomy, rng, 0.04)
    _fill(layers, region * (0.72 + 0.25 * f.severity) * (0.93 + 0.07 * mottle))
    # Air bronchograms: the bronchi stay aerated inside the filled lobe, so they show dark.
    hilum = np.array(anatomy.hilum(side))
    zone = anatomy.zone(side, f.zone)
    if zone.any():
        target = np.array([anatomy.u[zone].mean(), anatomy.v[zone].mean()])
        paths = []
        for _ in range(3):
            end = target + rng.normal(0.0, 0.04, 2)
            bend = 0.5 * (hilum + end) + rng.normal(0.0, 0.015, 2)
            paths.append(np.stack([hilum, bend, end]))
        bronchi = smooth(anatomy, stroke(anatomy, paths, 0.006), 0.0015)
        layers.extra -= 0.06 * bronchi * region


def opacity(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """Patchy, fainter airspace opacity in the named zone."""
    region = _zone_soft(anatomy, side, f.zone, sigma=0.02)
    patches = smoothstep((texture(anatomy, rng, 0.035) + 0.8) / 2.0)
    _fill(layers, region * patches * (0.35 + 0.3 * f.severity))


def edema(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """Perihilar (batwing) haze and short horizontal septal (Kerley B) lines at the base."""
    g = anatomy.geometry
    lung = _lung_soft(anatomy, side)
    hilum_u, hilum_v = anatomy.hilum(side)
    reach = 0.11 + 0.07 * f.severity
    haze = np.exp(-((anatomy.u - hilum_u) ** 2 + (0.8 * (anatomy.v - hilum_v)) ** 2) / reach**2)
    _fill(layers, (0.35 + 0.4 * f.severity) * haze * lung)
    lines = []
    sign, base = (1.0 if side == "left" else -1.0), g.costophrenic_y(side)
    for height in rng.uniform(base - 0.13, base - 0.03, 4 + int(4 * f.severity)):
        wall = float(lateral_wall(g, side, np.float32(height))) - 0.004  # septa reach the pleura
        inward = wall - rng.uniform(0.018, 0.035)
        lines.append(np.array([[g.midline + sign * wall, height], [g.midline + sign * inward, height]]))
    septa = stroke(anatomy, lines, 0.004) * anatomy.lung(side)
    layers.extra += 0.07 * smooth(anatomy, septa, 0.001)


def atelectasis(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """A plate-like (discoid) band across the zone; the volume loss is in the geometry."""
    zone = anatomy.zone(side, f.zone)
    if not zone.any():
        return
    g = anatomy.geometry
    d = anatomy.lateral_distance(side)[zone]
    level = float(np.quantile(anatomy.v[zone], rng.uniform(0.35, 0.6)))
    sign = 1.0 if side == "left" else -1.0
    near, far = float(np.quantile(d, 0.08)), float(np.quantile(d, 0.9))
    t = np.linspace(0.0, 1.0, 12)
    tilt = rng.uniform(-0.02, 0.025)  # plates lie roughly horizontal, a little oblique
    wave = 0.008 * np.sin(np.pi * t) + 0.003 * np.sin(3.0 * np.pi * t + rng.uniform(0.0, 2.0 * np.pi))
    path = np.stack([g.midline + sign * (near + t * (far - near)), level + tilt * t + wave], 1)
    band = smooth(anatomy, stroke(anatomy, [path], 0.008 + 0.008 * f.severity), 0.003)
    _fill(
        layers,
        np.clip(0.55 * band + 0.15 * f.severity * _zone_soft(anatomy, side, f.zone), 0.0, 1.0)
        * _lung_soft(anatomy, side),
    )


# --- focal lesions ----------------------------------------------------------------------------


def nodule(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """A small round soft-tissue density (about 5-10 pixels across at 256)."""
    radius = 0.01 + 0.008 * f.severity
    centre = _point_in(anatomy, side, f.zone, radius + 0.015, rng)
    _fill(layers, 0.95 * _sphere(anatomy, centre, radius))
    layers.extra += 0.04 * _sphere(anatomy, centre, radius)


def mass(layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator) -> None:
    """A larger lobulated density: overlapping lobes around one centre."""
    radius = 0.035 + 0.03 * f.severity
    centre = np.array(_point_in(anatomy, side, f.zone, radius + 0.01, rng))
    lesion = _sphere(anatomy, tuple(centre), 0.75 * radius)
    for angle in rng.uniform(0.0, 2.0 * math.pi, 4):
        lobe = centre + 0.4 * radius * np.array([math.cos(angle), math.sin(angle)])
        lesion = np.maximum(lesion, _sphere(anatomy, tuple(lobe), rng.uniform(0.5, 0.7) * radius))
    _fill(layers, lesion)
    layers.extra += 0.08 * lesion


def calcified_granuloma(
    layers: Layers, anatomy: Anatomy, f: PhantomFinding, side: str, rng: Generator
) -> None:
    """A small, very dense (calcified) nodule: as bright as bone."""
    radius = 0.007 + 0.004 * f.severity
    centre = _point_in(anatomy, side, f.zone, radius + 0.015, rng)
    layers.extra += 0.22 * _sphere(anatomy, centre, radius)


def fracture_callus(layers: Layers, anatomy: Anatomy, f: PhantomFinding) -> None:
    """Fusiform callus around each break of this side (the gap and step are in the geometry)."""
    g = anatomy.geometry
    if f.kind == "rib_fracture":
        sites = [
            point_along(posterior_rib(g, side, index), at)
            for side, index, at, _ in g.rib_breaks
            if side in f.sides
        ]
    else:
        sites = [point_along(clavicle(g, side), 0.5) for side, _ in g.clavicle_breaks if side in f.sides]
    for site in sites:
        layers.extra += 0.04 * soft_disk(anatomy, site, 0.014, edge=0.01)


def hiatal_hernia(layers: Layers, anatomy: Anatomy, f: PhantomFinding) -> None:
    """A retrocardiac round density holding an air-fluid level."""
    g = anatomy.geometry
    radius = 0.04 + 0.02 * f.severity
    centre = (g.midline + 0.02, g.dome_y("left") - 0.03)
    sac = soft_disk(anatomy, centre, radius, edge=0.004)
    gas = sac * (anatomy.v < centre[1] - 0.2 * radius)  # gas rises above a flat fluid level
    layers.extra += 0.03 * sac
    layers.air += 0.16 * smooth(anatomy, gas, 0.0015)


LUNG_DRAWERS: dict[str, Callable] = {
    "pleural_effusion": pleural_effusion,
    "pneumothorax": pneumothorax,
    "pleural_thickening": pleural_thickening,
    "consolidation": consolidation,
    "opacity": opacity,
    "edema": edema,
    "atelectasis": atelectasis,
    "nodule": nodule,
    "mass": mass,
    "calcified_granuloma": calcified_granuloma,
}
