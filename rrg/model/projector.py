"""The visual projector: patch tokens into the language model's embedding space (R2GenGPT's
bridge), pooled to a fixed number of visual tokens so the prompt stays short."""

from __future__ import annotations

import math

import torch
from torch import nn


class VisualProjector(nn.Module):
    """(B, N, W) patch tokens on a square grid -> (B, visual_tokens, hidden) prompt tokens."""

    def __init__(self, token_width: int, hidden_size: int, visual_tokens: int):
        super().__init__()
        side = math.isqrt(visual_tokens)
        if side * side != visual_tokens:
            raise ValueError(f"visual_tokens must be a square number, not {visual_tokens}")
        self.side = side
        self.norm = nn.LayerNorm(token_width)
        self.mlp = nn.Sequential(nn.Linear(token_width, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, width = tokens.shape
        grid = math.isqrt(count)
        x = tokens.transpose(1, 2).reshape(batch, width, grid, grid)  # (B, W, g, g)
        x = nn.functional.adaptive_avg_pool2d(x, self.side)  # (B, W, s, s)
        x = x.flatten(2).transpose(1, 2)  # (B, s*s, W)
        return self.mlp(self.norm(x))  # (B, visual_tokens, hidden)
