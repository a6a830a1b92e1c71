"""The density layers of a phantom, and the normal chest drawn into them.

A radiograph is bright where the beam was attenuated. We keep attenuation in separate layers
so that a finding changes exactly the thing it changes in a patient: fluid or tissue filling
alveolar air (`fill`), air without lung (`air` up, `markings` gone), a lump (`extra`), metal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrg.demo.phantom.anatomy import SIDE_SIGN, Anatomy, body_half_width, study_rng
from rrg.demo.phantom.draw import smooth, soft_disk, stroke
from rrg.demo.phantom.skeleton import skeleton

LUNG_AIR = 0.40  # attenuation a full lung's air removes from the chest's soft tissue
MARKINGS = 0.10  # density of the largest vessels
FLUID = 0.12  # fluid or tissue filling the lung is as thick as the lung was: denser than the chest wall alone


@dataclass
class Layers:
    """Attenuation (arbitrary units) by what causes it; `density()` combines them."""

    tissue: np.ndarray  # soft tissue path length: body wall, mediastinum, heart, abdomen
    air: np.ndarray  # air in the lungs, trachea and stomach (subtracted)
    markings: np.ndarray  # pulmonary vessels and bronchial walls
    fill: np.ndarray  # 0..1 share of lung air replaced by fluid or tissue
    extra: np.ndarray  # added density of lesions, septal lines, pleural lines
    bone: np.ndarray
    metal: np.ndarray  # devices: radiopaque, the brightest things on the film

    def density(self) -> np.ndarray:
        """Total attenuation along each ray."""
        fill = np.clip(self.fill, 0.0, 1.0)
        # Filled airspaces hide their vessels (the silhouette sign), hence markings fade with fill.
        return (
            self.tissue
            - self.air * (1.0 - fill)
            + FLUID * fill
            + self.markings * (1.0 - 0.8 * fill)
            + self.extra
            + self.bone
            + self.metal
        )


def below_diaphragm(anatomy: Anatomy) -> np.ndarray:
    """Mask of the abdomen under both hemidiaphragms."""
    return anatomy.body & (anatomy.v >= anatomy.diaphragm_floor)


def soft_tissue(anatomy: Anatomy) -> np.ndarray:
    """Body soft tissue, thickest centrally (a cylinder seen side-on), denser mediastinum and abdomen."""
    g = anatomy.geometry
    offset = np.abs(anatomy.u - g.midline)
    thickness = np.sqrt(np.clip(1.0 - (offset / body_half_width(g, anatomy.v)) ** 2, 0.0, 1.0))
    tissue = smooth(anatomy, anatomy.body, 0.004) * (0.30 + 0.32 * thickness)
    tissue += 0.06 * smooth(anatomy, anatomy.heart | anatomy.mediastinum, 0.003)
    tissue += 0.06 * smooth(anatomy, below_diaphragm(anatomy), 0.006)
    return tissue


def airways(anatomy: Anatomy, lungs: np.ndarray) -> np.ndarray:
    """Air of the lungs (`lungs`: their soft mask; thicker at the bases), trachea, bronchi, gastric bubble."""
    g = anatomy.geometry
    dome = 0.5 * (g.resting_dome_y("right") + g.resting_dome_y("left"))
    depth = np.clip((anatomy.v - g.apex_y) / (dome - g.apex_y), 0.0, 1.0)
    air = LUNG_AIR * lungs * (0.8 + 0.25 * depth)
    trachea = [np.array([[g.midline, g.apex_y - 0.15], [g.midline + 0.004, g.carina_y]])]
    bronchi = [np.array([[g.midline, g.carina_y - 0.005], anatomy.hilum(side)]) for side in SIDE_SIGN]
    air += 0.2 * smooth(anatomy, stroke(anatomy, trachea, 0.034), 0.002)
    air += 0.09 * smooth(anatomy, stroke(anatomy, bronchi, 0.022), 0.002)
    bubble = (g.midline + 0.45 * g.thorax_half_width, g.dome_y("left") + 0.035 + g.stomach_bubble)
    air += 0.2 * soft_disk(anatomy, bubble, g.stomach_bubble, edge=0.006) * below_diaphragm(anatomy)
    return air


def vascular_tree(anatomy: Anatomy, rng: np.random.Generator, generations: int = 6) -> np.ndarray:
    """Branching pulmonary vessels fanning out of each hilum, thick centrally and fading outward."""
    starts, angles, signs = [], [], []
    for side, sign in SIDE_SIGN.items():
        # Upper-lobe, middle and lower-lobe trunks; the lower ones run longer (more lung below the hilum).
        trunks = np.radians(np.array([-62.0, -28.0, 8.0, 42.0, 72.0]) + rng.normal(0.0, 7.0, 5))
        starts += [anatomy.hilum(side)] * len(trunks)
        angles.append(trunks)
        signs += [sign] * len(trunks)
    start = np.array(starts)  # (n, 2) patient frame
    angle, sign = np.concatenate(angles), np.array(signs)
    length, width = rng.uniform(0.06, 0.08, len(angle)), 0.012
    tree = np.zeros((anatomy.size, anatomy.size), dtype=np.float32)
    for generation in range(generations):  # each generation: every vessel forks in two, thinner and shorter
        end = start + length[:, None] * np.stack([sign * np.cos(angle), np.sin(angle)], axis=1)
        segments = np.stack([start, end], axis=1)  # (n, 2 points, 2)
        drawn = stroke(anatomy, segments, width)
        tree = np.maximum(tree, 0.8**generation * drawn)
        spread = np.radians(rng.uniform(12.0, 34.0, (len(angle), 2))) * np.array([-1.0, 1.0])
        start, sign = np.repeat(end, 2, axis=0), np.repeat(sign, 2)
        angle = (angle[:, None] + spread).ravel()
        length = np.repeat(length, 2) * rng.uniform(0.68, 0.86, 2 * len(length))
        width *= 0.74
    return smooth(anatomy, tree, 0.0025)


def normal_layers(anatomy: Anatomy, study_id: str) -> Layers:
    """Layers of the normal chest of this study (before any finding)."""
    lungs = anatomy.soft_lung("right") + anatomy.soft_lung("left")
    markings = MARKINGS * vascular_tree(anatomy, study_rng(study_id, "markings")) * lungs
    zeros = np.zeros((anatomy.size, anatomy.size), dtype=np.float32)
    return Layers(
        tissue=soft_tissue(anatomy),
        air=airways(anatomy, lungs),
        markings=markings,
        fill=zeros.copy(),
        extra=zeros.copy(),
        bone=skeleton(anatomy),
        metal=zeros.copy(),
    )
