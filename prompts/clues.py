"""Disease clues (TRRG, Wang et al., section 2.2): templates, clue weights, top-k selection,
the cross-modal clue interaction module and the disease-aware consistency loss L_dc.

From TRRG: the "Clue: <severity> <disease> at <location>" templates (here one per CheXbert label),
w = softmax(v_cls . c_cls) and the top-k clues (k = 3), self-attention on each stream (eq. 2), L
learnable queries that cross-attend to each stream then an FFN (eq. 3), L_dc = -cos(E^v, E^c)
(eq. 4), 8 heads.

Ours, where the paper is silent or where we differ:
- one token per clue (its sentence embedding c_cls), not the r word tokens of each prompt;
- v_cls and c_cls are projected into one space, and their dot product is scaled by 1/sqrt(dim)
  as attention scores are, so that w does not saturate to one-hot at dim = 1024;
- the selected clue tokens are scaled by their weights (see `ClueInteraction.forward`);
- the tokens for the LLM projector are [E^v ; E^c], (B, 2L, dim): what the queries read in the
  image and in the clues, kept consistent by L_dc;
- L_dc compares the query means of E^v and E^c per study, averaged over the batch;
- `clue_attention`: the queries are the only path between clues and image, so a clue's map is
  the visual attention of the queries weighted by how much each query read that clue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from prompts.vocabulary import CHEXBERT_LABELS, NO_FINDING


@dataclass(frozen=True)
class ClueTemplate:
    """One disease clue prompt; an empty severity is left out of the text."""

    label: str  # a CheXbert label
    severity: str
    disease: str
    location: str

    @property
    def text(self) -> str:
        words = " ".join(part for part in (self.severity, self.disease) if part)
        return f"Clue: {words} at {self.location}"


# label: (severity, disease, location), the most typical presentation of each finding in reports.
_DEFAULT_WORDS: dict[str, tuple[str, str, str]] = {
    "Enlarged Cardiomediastinum": ("mild", "enlarged cardiomediastinal silhouette", "mediastinum"),
    "Cardiomegaly": ("moderate", "cardiomegaly", "cardiac silhouette"),
    "Lung Opacity": ("patchy", "airspace opacity", "lung base"),
    "Lung Lesion": ("small", "pulmonary nodule", "upper lobe"),
    "Edema": ("mild", "pulmonary edema", "perihilar region"),
    "Consolidation": ("focal", "consolidation", "lower lobe"),
    "Pneumonia": ("early", "pneumonia", "lower lobe"),
    "Atelectasis": ("mild", "atelectasis", "lung bases"),
    "Pneumothorax": ("small", "pneumothorax", "lung apex"),
    "Pleural Effusion": ("moderate", "pleural effusion", "costophrenic angle"),
    "Pleural Other": ("mild", "pleural thickening", "lung apex"),
    "Fracture": ("healed", "rib fracture", "lateral ribs"),
    "Support Devices": ("", "support device", "chest"),
    NO_FINDING: ("no", "acute cardiopulmonary abnormality", "chest"),
}
DEFAULT_CLUE_TEMPLATES: tuple[ClueTemplate, ...] = tuple(
    ClueTemplate(label, *_DEFAULT_WORDS[label]) for label in CHEXBERT_LABELS
)


def templates_from_config(config: Mapping[str, Mapping[str, str]]) -> tuple[ClueTemplate, ...]:
    """Clue templates in CheXbert head order from {label: {"severity", "location"[, "disease"]}}."""
    missing = [label for label in CHEXBERT_LABELS if label not in config]
    unknown = [label for label in config if label not in CHEXBERT_LABELS]
    if missing or unknown:
        raise ValueError(
            f"clue templates must cover exactly the 14 CheXbert labels; missing {missing}, unknown {unknown}"
        )
    templates = []
    for label in CHEXBERT_LABELS:
        words = dict(config[label])
        extra = set(words) - {"severity", "location", "disease"}
        if extra or "severity" not in words or "location" not in words:
            raise ValueError(
                f"clue template for {label!r} needs 'severity' and 'location' (and optionally 'disease'), "
                f"got keys {sorted(words)}"
            )
        disease = words.get("disease", _DEFAULT_WORDS[label][1])
        templates.append(ClueTemplate(label, words["severity"], disease, words["location"]))
    return tuple(templates)


def clue_texts(templates: tuple[ClueTemplate, ...] | None = None) -> list[str]:
    """The clue prompts to encode, in template (CheXbert head) order."""
    return [template.text for template in (DEFAULT_CLUE_TEMPLATES if templates is None else templates)]


def clue_weights(visual_cls: torch.Tensor, clue_cls: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, C) relevance of each clue to each image, softmax over clues (TRRG sec. 2.2, unnumbered).

    Both inputs must already live in one space: visual_cls (B, d), clue_cls (C, d).
    """
    if visual_cls.dim() != 2 or clue_cls.dim() != 2 or visual_cls.shape[1] != clue_cls.shape[1]:
        raise ValueError(f"need (B, d) and (C, d), got {tuple(visual_cls.shape)} and {tuple(clue_cls.shape)}")
    return torch.softmax(visual_cls @ clue_cls.T / temperature, dim=-1)  # w = softmax(v_cls . c_cls)


def top_k_clues(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (B, k), weights (B, k)) of the k heaviest clues, heaviest first: topk(w, k)."""
    if weights.dim() != 2 or not 1 <= k <= weights.shape[1]:
        raise ValueError(f"k must be in 1..C for weights (B, C), got k={k} and {tuple(weights.shape)}")
    values, indices = torch.topk(weights, k, dim=-1, sorted=True)
    return indices, values


@dataclass(frozen=True)
class ClueOutput:
    """What `ClueInteraction` hands on: tokens for the generator, the chosen clues, L_dc inputs, maps."""

    tokens: torch.Tensor  # (B, 2L, dim) [E^v ; E^c], for the LLM projector
    selected: torch.Tensor  # (B, k) clue indices (template order), heaviest first
    selected_weights: torch.Tensor  # (B, k)
    all_weights: torch.Tensor  # (B, C)
    visual_summary: torch.Tensor  # (B, dim) E^v averaged over the queries, for L_dc
    clue_summary: torch.Tensor  # (B, dim) E^c averaged over the queries, for L_dc
    clue_attention: torch.Tensor  # (B, k, N) each selected clue's attention over the visual tokens


class _SelfAttention(nn.Module):
    """Pre-norm residual multi-head self-attention over one stream (eq. 2)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        return tokens + self.attention(x, x, x, need_weights=False)[0]


class _QueryReadout(nn.Module):
    """Learnable queries cross-attend to one stream, then an FFN (eq. 3); returns the head-averaged
    attention too."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The memory is not normalised: the clue weights scale the clue tokens, and a norm would undo it.
        read, attention = self.attention(self.query_norm(queries), memory, memory, average_attn_weights=True)
        x = queries + read  # (B, L, dim); attention (B, L, M)
        return x + self.ffn(self.ffn_norm(x)), attention


class ClueInteraction(nn.Module):
    """Clue injection and cross-modal clue interaction: picks the top-k clues for each image and
    fuses them with the visual tokens through L learnable queries. Its sizes come from the model
    config (`rrg.config.CluesConfig`: TRRG's K = 3 and 8 heads; TRRG gives no L)."""

    def __init__(self, visual_dim: int, clue_dim: int, dim: int, *, queries: int, heads: int, k: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by the number of attention heads ({heads})")
        if queries < 1 or k < 1:
            raise ValueError(f"need at least one query and one clue, got queries={queries}, k={k}")
        self.visual_dim, self.clue_dim, self.dim = visual_dim, clue_dim, dim
        self.num_queries, self.heads, self.k = queries, heads, k
        self.visual_proj = nn.Linear(visual_dim, dim)  # TRRG's mapper v_d = W v_e + b
        self.clue_proj = nn.Linear(clue_dim, dim)  # ours: brings c_cls into the space of v_cls
        self.visual_self = _SelfAttention(dim, heads)
        self.clue_self = _SelfAttention(dim, heads)
        # E = {E_1..E_L}
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)  # cpu: a parameter
        self.visual_readout = _QueryReadout(dim, heads)
        self.clue_readout = _QueryReadout(dim, heads)

    def forward(
        self, visual_tokens: torch.Tensor, visual_cls: torch.Tensor, clue_embeddings: torch.Tensor
    ) -> ClueOutput:
        """visual_tokens (B, N, Dv); visual_cls (B, Dv), e.g. their mean as in TRRG; clue_embeddings
        (C, Dc), one per template, from a frozen text encoder."""
        batch = visual_tokens.shape[0]
        if (
            visual_tokens.dim() != 3
            or visual_tokens.shape[2] != self.visual_dim
            or visual_cls.shape != (batch, self.visual_dim)
            or clue_embeddings.dim() != 2
            or clue_embeddings.shape[1] != self.clue_dim
        ):
            raise ValueError(
                f"need visual tokens (B, N, {self.visual_dim}), visual cls (B, {self.visual_dim}) and clue "
                f"embeddings (C, {self.clue_dim}); got {tuple(visual_tokens.shape)}, "
                f"{tuple(visual_cls.shape)}, {tuple(clue_embeddings.shape)}"
            )

        visual = self.visual_proj(visual_tokens)  # (B, N, dim)
        clues = self.clue_proj(clue_embeddings)  # (C, dim)
        all_weights = clue_weights(self.visual_proj(visual_cls), clues, math.sqrt(self.dim))  # (B, C)
        selected, selected_weights = top_k_clues(all_weights, self.k)  # (B, k) each: c_s = topk(w, k)
        # topk passes no gradient to w, and TRRG does not say how w learns. Ours: scale each chosen
        # clue by its weight, so the generation loss and L_dc reach w (and through it v_cls, c_cls).
        clue_tokens = clues[selected] * selected_weights.unsqueeze(-1)  # (B, k, dim)

        visual = self.visual_self(visual)  # (B, N, dim) V' (eq. 2)
        clue_tokens = self.clue_self(clue_tokens)  # (B, k, dim) C' (eq. 2)
        queries = self.queries.expand(batch, -1, -1)  # (B, L, dim)
        # eq. 3: E^v (B, L, dim) with its attention (B, L, N); E^c (B, L, dim) with (B, L, k)
        visual_read, visual_attention = self.visual_readout(queries, visual)
        clue_read, clue_attention = self.clue_readout(queries, clue_tokens)

        # Clue j's map: sum_l A^c[l, j] A^v[l, :] / sum_l A^c[l, j]; each row sums to 1 over N.
        relayed = clue_attention.transpose(1, 2) @ visual_attention  # (B, k, N)
        relayed = relayed / clue_attention.sum(dim=1).unsqueeze(-1).clamp_min(1e-12)
        return ClueOutput(
            tokens=torch.cat([visual_read, clue_read], dim=1),  # (B, 2L, dim)
            selected=selected,
            selected_weights=selected_weights,
            all_weights=all_weights,
            visual_summary=visual_read.mean(dim=1),  # (B, dim)
            clue_summary=clue_read.mean(dim=1),  # (B, dim)
            clue_attention=relayed,
        )

    def config(self) -> dict:
        return {
            "visual_dim": self.visual_dim,
            "clue_dim": self.clue_dim,
            "dim": self.dim,
            "queries": self.num_queries,
            "heads": self.heads,
            "k": self.k,
        }


class DiseaseClueLoss(nn.Module):
    """L_dc = -mean cos(E^v, E^c) (eq. 4): pulls what the queries read in the image towards what
    they read in the clues; -1 when aligned, +1 when opposite."""

    def forward(self, visual_summary: torch.Tensor, clue_summary: torch.Tensor) -> torch.Tensor:
        if visual_summary.shape != clue_summary.shape:
            raise ValueError(
                f"summaries differ in shape: {tuple(visual_summary.shape)} vs {tuple(clue_summary.shape)}"
            )
        return -nn.functional.cosine_similarity(visual_summary, clue_summary, dim=-1).mean()


def disease_clue_loss(visual_summary: torch.Tensor, clue_summary: torch.Tensor) -> torch.Tensor:
    """L_dc (eq. 4) as a function."""
    return DiseaseClueLoss()(visual_summary, clue_summary)
