"""Clue heat maps laid over the X-ray as the model framed it."""

from __future__ import annotations

import numpy as np
import pytest

from serving.heatmap import clue_overlay


def test_the_overlay_is_warm_where_the_clue_looked_and_gray_elsewhere():
    pixels = np.full((80, 40), 0.5, dtype=np.float32)  # portrait: padded left and right to a square
    attention = np.zeros((4, 4))
    attention[0, 3] = 1.0  # the top right patch
    overlay = clue_overlay(pixels, attention, size=64)
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8
    hot, cold = overlay[4, 60], overlay[60, 4]
    assert hot[0] > hot[2] + 100  # red over blue where the attention is
    assert cold[0] == cold[1] == cold[2]  # untouched gray (here the zero padding) elsewhere


@pytest.mark.parametrize("attention", [np.zeros((2, 3)), np.full((2, 2), np.nan), np.zeros(4)])
def test_a_malformed_attention_grid_is_refused(attention):
    with pytest.raises(ValueError, match="finite square grid"):
        clue_overlay(np.zeros((8, 8)), attention)
