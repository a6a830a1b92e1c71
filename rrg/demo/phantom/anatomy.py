"""Normal frontal (PA) chest geometry, varied per study: the shapes every phantom is drawn on.

Coordinates are relative to the image (0..1, x to the image right, y down) so one geometry
renders at any size. Radiographic convention: the patient's RIGHT is on the image LEFT, so a
patient side maps to a sign on x: right -> -1, left -> +1. Shapes are written in the patient
frame; a slight rotation (the patient not quite square to the detector) maps that frame onto
the image, so every mask and every drawn line shares it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SIDE_SIGN = {"right": -1.0, "left": 1.0}  # patient's right is drawn on the image left
# Lung zones as bands of the height from apex (0) to dome (1); "whole" is the entire lung.
LUNG_ZONES = {
    "apical": (-1.0, 0.18),
    "upper": (-1.0, 1 / 3),
    "mid": (1 / 3, 2 / 3),
    "lower": (2 / 3, 2.0),
    "basal": (0.8, 2.0),
    "whole": (-1.0, 2.0),
}
RIB_COUNT = 10


def study_rng(study_id: str, purpose: str) -> np.random.Generator:
    """A generator seeded from the study id and what it is for (never Python's salted hash())."""
    digest = hashlib.sha256(f"{study_id}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Geometry:
    """Scalar shape parameters of one chest, in relative image units."""

    midline: float
    thorax_half_width: float  # inner rib margin to the midline, at the widest
    apex_y: float  # top of the lung apices
    right_dome_y: float  # top of the right hemidiaphragm dome (higher than the left: the liver)
    left_dome_y: float
    dome_depth: float  # how far the costophrenic angle sits below the dome top
    rotation_deg: float
    heart_ctr: float  # heart width / thoracic width that the heart is built to
    heart_minor: float  # short semi-axis of the heart ellipse
    heart_tilt_deg: float  # long axis pointing down to the patient's left (apex of the heart)
    heart_right_fraction: float  # share of the heart width right of the midline
    mediastinum_half_width: float
    carina_y: float
    aortic_knob_y: float
    clavicle_y: float
    body_margin: float  # lateral chest-wall soft tissue outside the ribs
    rib_spacing_jitter: float
    stomach_bubble: float  # radius of the gastric air bubble under the left dome
    # Changes a finding makes to the anatomy (pathology.adjust_geometry sets them).
    mediastinum_scale: float = 1.0
    diaphragm_raise: tuple[float, float] = (0.0, 0.0)  # (right, left): volume loss lifts a dome
    hyperinflation: float = 0.0  # 0..1: flattened, lowered domes
    rib_breaks: tuple[tuple[str, int, float, float], ...] = ()  # (side, rib index, t along rib, step)
    clavicle_breaks: tuple[tuple[str, float], ...] = ()  # (side, step)

    def resting_dome_y(self, side: str) -> float:
        """Top of that hemidiaphragm dome before volume loss lifts it (where heart and ribs sit)."""
        base = self.right_dome_y if side == "right" else self.left_dome_y
        return base + 0.05 * self.hyperinflation

    def dome_y(self, side: str) -> float:
        """Top of that hemidiaphragm dome after volume changes."""
        return self.resting_dome_y(side) - self.diaphragm_raise[0 if side == "right" else 1]

    def depth(self) -> float:
        """Dome height above the costophrenic angle; hyperinflation flattens it."""
        return self.dome_depth * (1.0 - 0.55 * self.hyperinflation)

    def costophrenic_y(self, side: str) -> float:
        """Height of the costophrenic angle on that side."""
        return self.dome_y(side) + self.depth()


def sample_geometry(study_id: str) -> Geometry:
    """Normal geometry for a study: habitus, inspiration, heart size and pose, from its id only."""
    rng = study_rng(study_id, "anatomy")
    uniform = rng.uniform
    apex_y = uniform(0.10, 0.14)
    right_dome_y = uniform(0.62, 0.70)  # deeper inspiration -> lower domes
    carina_y = apex_y + uniform(0.19, 0.23)
    return Geometry(
        midline=0.5 + uniform(-0.012, 0.012),
        thorax_half_width=uniform(0.335, 0.39),
        apex_y=apex_y,
        right_dome_y=right_dome_y,
        left_dome_y=right_dome_y + uniform(0.015, 0.035),
        dome_depth=uniform(0.07, 0.10),
        rotation_deg=uniform(-3.0, 3.0),
        heart_ctr=uniform(0.41, 0.49),
        heart_minor=uniform(0.075, 0.09),
        heart_tilt_deg=uniform(34.0, 44.0),
        heart_right_fraction=uniform(0.27, 0.35),
        mediastinum_half_width=uniform(0.045, 0.055),
        carina_y=carina_y,
        aortic_knob_y=carina_y - uniform(0.04, 0.06),
        clavicle_y=apex_y + uniform(0.06, 0.085),
        body_margin=uniform(0.04, 0.09),
        rib_spacing_jitter=uniform(-0.004, 0.004),
        stomach_bubble=uniform(0.025, 0.045),
    )


# --- shape functions of the patient frame (d: distance from the midline toward one side) ---------


def lateral_wall(g: Geometry, side: str, v: np.ndarray) -> np.ndarray:
    """Distance of the inner chest wall from the midline at height v: round apex, widest below."""
    t = np.clip((v - g.apex_y) / (g.costophrenic_y(side) - g.apex_y), 0.0, 1.0)
    rise = np.clip(t / 0.62, 0.0, 1.0)
    # A circular quadrant from the apex to the widest point gives the rounded upper thorax.
    return g.thorax_half_width * (0.45 + 0.55 * np.sqrt(1.0 - (1.0 - rise) ** 2))


def lung_top(g: Geometry, d: np.ndarray) -> np.ndarray:
    """Height of the apical pleura above each lateral position (a dome over the apex)."""
    return g.apex_y + 0.10 * ((d - 0.30 * g.thorax_half_width) / g.thorax_half_width) ** 2


def diaphragm(g: Geometry, side: str, d: np.ndarray) -> np.ndarray:
    """Height of the hemidiaphragm under each lateral position: a dome falling steeply laterally."""
    peak = 0.42 * g.thorax_half_width
    lateral = np.clip((d - peak) / (g.thorax_half_width - peak), 0.0, None)
    medial = np.clip((peak - d) / peak, 0.0, 1.0)
    return g.dome_y(side) + g.depth() * lateral**2.4 + 0.35 * g.depth() * medial**2


def mediastinal_border(g: Geometry, side: str, v: np.ndarray) -> np.ndarray:
    """Distance of the mediastinal edge from the midline: superior mediastinum, aortic knob on the left."""
    half = g.mediastinum_half_width * (1.0 + 0.3 * np.clip((v - g.apex_y) / 0.3, 0.0, 1.0))
    # A widened mediastinum bulges: most at the arch, tapering to the neck and to the heart.
    top, bottom = g.apex_y - 0.06, g.carina_y + 0.12
    bulge = np.clip(np.sin(np.pi * np.clip((v - top) / (bottom - top), 0.0, 1.0)), 0.0, 1.0) ** 0.6
    widening = 1.0 + (g.mediastinum_scale - 1.0) * bulge
    border = half * widening
    if side == "left":  # the aortic arch bulges into the left upper lung
        knob = 0.03 * np.exp(-(((v - g.aortic_knob_y) / 0.03) ** 2))
        knob = knob + 0.015 * np.exp(-(((v - g.aortic_knob_y - 0.07) / 0.03) ** 2))  # pulmonary trunk
        border = border + knob * widening
    return border


@dataclass(frozen=True, eq=False)
class Anatomy:
    """The geometry of one phantom rasterised at one size: masks tests and findings share."""

    size: int
    geometry: Geometry
    u: np.ndarray = field(repr=False)  # (size, size) patient-frame x of each pixel
    v: np.ndarray = field(repr=False)  # (size, size) patient-frame y of each pixel
    body: np.ndarray = field(repr=False)
    right_lung: np.ndarray = field(repr=False)
    left_lung: np.ndarray = field(repr=False)
    heart: np.ndarray = field(repr=False)
    mediastinum: np.ndarray = field(repr=False)
    right_costophrenic: np.ndarray = field(repr=False)
    left_costophrenic: np.ndarray = field(repr=False)
    diaphragm_floor: np.ndarray = field(repr=False)  # height of the hemidiaphragm under each pixel
    ctr: float = 0.0  # cardiothoracic ratio measured on the masks
    _soft_lungs: dict = field(default_factory=dict, repr=False)

    def soft_lung(self, side: str) -> np.ndarray:
        """The lung mask with edges blurred by a pixel or so (float 0..1), computed once."""
        if side not in self._soft_lungs:
            mask = self.lung(side).astype(np.float32)
            self._soft_lungs[side] = ndimage.gaussian_filter(
                mask, max(0.0025 * self.size, 0.3), mode="nearest"
            )
        return self._soft_lungs[side]

    # -- lookups by side ---------------------------------------------------------------------

    def lung(self, side: str) -> np.ndarray:
        """Lung mask of the patient's side ("right" lies on the image left)."""
        return self.right_lung if side == "right" else self.left_lung

    def costophrenic_angle(self, side: str) -> np.ndarray:
        """Region around that side's costophrenic angle (lung, wall and dome meeting)."""
        return self.right_costophrenic if side == "right" else self.left_costophrenic

    def lateral_distance(self, side: str) -> np.ndarray:
        """Distance of each pixel from the midline toward that side (negative across it)."""
        return SIDE_SIGN[side] * (self.u - self.geometry.midline)

    def zone(self, side: str, zone: str) -> np.ndarray:
        """Lung zone mask: thirds of the height from apex to dome, plus apical cap and bases."""
        g, lung = self.geometry, self.lung(side)
        low, high = LUNG_ZONES[zone]
        height = (self.v - g.apex_y) / (g.dome_y(side) - g.apex_y)
        return lung & (height >= low) & (height < high)

    def wall_distance(self, side: str) -> np.ndarray:
        """Approximate distance of each pixel inside the thorax from the lateral and apical chest wall."""
        d = self.lateral_distance(side)
        g = self.geometry
        return np.minimum(lateral_wall(g, side, self.v) - d, self.v - lung_top(g, d))

    def hilum(self, side: str) -> tuple[float, float]:
        """Patient-frame point of the hilum (the left sits higher than the right)."""
        g = self.geometry
        y = g.carina_y + (0.075 if side == "right" else 0.055)
        return g.midline + SIDE_SIGN[side] * (g.mediastinum_half_width + 0.055), y

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Patient-frame points (..., 2) to image pixel coordinates (..., 2), rotation applied."""
        angle = math.radians(self.geometry.rotation_deg)
        c, s = math.cos(angle), math.sin(angle)
        rel = np.asarray(points, dtype=np.float64) - 0.5
        x = c * rel[..., 0] - s * rel[..., 1] + 0.5
        y = s * rel[..., 0] + c * rel[..., 1] + 0.5
        return np.stack([x, y], axis=-1) * self.size

    def pixels(self, length: float) -> float:
        """A relative length in pixels at this size."""
        return length * self.size


def patient_grid(size: int, rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Patient-frame coordinates (u, v) of every pixel centre, undoing the patient's rotation."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = np.meshgrid(centres, centres)
    angle = math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    return (c * x + s * y + 0.5).astype(np.float32), (-s * x + c * y + 0.5).astype(np.float32)


def heart_mask(g: Geometry, u: np.ndarray, v: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The cardiac silhouette sized to the geometry's CTR, cut by the diaphragm.

    Two chambers make the borders a radiologist reads: the right atrium (a low, round right
    heart border) and the left ventricle (a tilted ellipse whose apex points down and to the
    patient's left, sitting on the left hemidiaphragm).
    """
    width = g.heart_ctr * 2.0 * g.thorax_half_width
    right_edge = g.midline - g.heart_right_fraction * width
    left_edge = g.midline + (1.0 - g.heart_right_fraction) * width
    dome = 0.5 * (g.resting_dome_y("right") + g.resting_dome_y("left"))
    tilt = math.radians(g.heart_tilt_deg)
    minor = g.heart_minor * (1.0 + 0.6 * max(g.heart_ctr - 0.5, 0.0))
    reach = 0.42 * width  # the ventricle's half width; its long axis follows from the tilt
    major = math.sqrt(max(reach**2 - (minor * math.sin(tilt)) ** 2, 1e-6)) / math.cos(tilt)
    extent_y = math.sqrt((major * math.sin(tilt)) ** 2 + (minor * math.cos(tilt)) ** 2)
    du, dv = u - (left_edge - reach), v - (dome - 0.3 * extent_y)
    along = du * math.cos(tilt) + dv * math.sin(tilt)
    across = -du * math.sin(tilt) + dv * math.cos(tilt)
    ventricle = (along / major) ** 2 + (across / minor) ** 2 <= 1.0
    atrium_rx, atrium_ry = 0.22 * width, 0.085 + 0.1 * max(g.heart_ctr - 0.5, 0.0)
    atrium = ((u - right_edge - atrium_rx) / atrium_rx) ** 2 + (
        (v - dome + 0.6 * atrium_ry) / atrium_ry
    ) ** 2 <= 1.0
    return (ventricle | atrium) & (v < floor)


def build_anatomy(g: Geometry, size: int) -> Anatomy:
    """Rasterise a geometry into the masks of one phantom."""
    u, v = patient_grid(size, g.rotation_deg)
    offset = np.abs(u - g.midline)
    floor = np.where(u < g.midline, diaphragm(g, "right", offset), diaphragm(g, "left", offset))
    heart = heart_mask(g, u, v, floor)
    lungs, costophrenic, mediastinum = {}, {}, np.zeros((size, size), dtype=bool)
    for side, sign in SIDE_SIGN.items():
        d = sign * (u - g.midline)
        medial = mediastinal_border(g, side, v)
        # `floor` is this side's dome wherever d > 0, the only place a lung can be.
        inside = (d < lateral_wall(g, side, v)) & (v > lung_top(g, d)) & (v < floor)
        lungs[side] = inside & (d > medial) & ~heart
        mediastinum |= (d >= 0) & (d <= medial) & (v > g.apex_y - 0.1) & (v < g.resting_dome_y(side))
        cp_x, cp_y = g.midline + sign * g.thorax_half_width * 0.93, g.costophrenic_y(side) - 0.025
        costophrenic[side] = ((u - cp_x) ** 2 + (v - cp_y) ** 2 < 0.045**2) & (d < lateral_wall(g, side, v))
    return Anatomy(
        size=size,
        geometry=g,
        u=u,
        v=v,
        body=body_mask(g, u, v),
        right_lung=lungs["right"],
        left_lung=lungs["left"],
        heart=heart,
        mediastinum=mediastinum & ~heart,
        right_costophrenic=costophrenic["right"],
        left_costophrenic=costophrenic["left"],
        diaphragm_floor=floor,
        ctr=cardiothoracic_ratio(u, heart, lungs["right"] | lungs["left"]),
    )


def body_half_width(g: Geometry, v: np.ndarray) -> np.ndarray:
    """Half width of the body outline: neck, shoulders sweeping out of the field, chest wall."""
    chest = g.thorax_half_width + g.body_margin
    shoulders = np.clip((g.clavicle_y + 0.12 - v) / 0.10, 0.0, 1.0)
    return chest + (0.62 - chest) * shoulders


def body_mask(g: Geometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the body is (the rest of the field is air and renders black)."""
    d = np.abs(u - g.midline)
    shoulder_top = g.apex_y - 0.10 + 0.16 * np.clip((d - 0.09) / 0.45, 0.0, None) ** 1.5
    neck = d < 0.085
    return (d < body_half_width(g, v)) & ((v > shoulder_top) | neck)


def cardiothoracic_ratio(u: np.ndarray, heart: np.ndarray, lungs: np.ndarray) -> float:
    """Heart width over thoracic width (lateral lung margins), measured in the patient frame."""
    heart_u, lungs_u = u[heart], u[lungs]
    if heart_u.size == 0 or lungs_u.size == 0:
        return 0.0
    return float((heart_u.max() - heart_u.min()) / (lungs_u.max() - lungs_u.min()))
