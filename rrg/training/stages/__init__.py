"""The stages of `rrg train`, in the order they run; each a module with `NAME`, `SEED_OFFSET` and
`run(ctx: TrainingRun) -> summary`, writing its part of the bundle.

1. tokenizer    a BPE vocabulary learned from the training reports (demo base), or the base's own
2. contrastive  MedFuse-CLIP pre-training of the open_clip towers (when `training.clip_epochs` > 0)
3. vision       the open_clip encoder and finding heads; then the suggestion thresholds
4. index        the retrieval index over the training studies (and the LRE, for hyperbolic retrieval)
5. language     the demo Mistral on report text alone (skipped for a pretrained base)
6. drafting     the visual prompt (projector, Sinkhorn fusion, disease clues) and the LoRA adapter
"""

from rrg.training.stages import contrastive, drafting, index, language, tokenizer, vision

STAGES = (tokenizer, contrastive, vision, index, language, drafting)
