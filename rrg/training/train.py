"""`rrg train`: a data set folder in, a bundle out, in resumable stages.

1. tokenizer  a BPE vocabulary learned from the training reports (demo base), or the base's own
2. contrastive MedFuse-CLIP pre-training of the open_clip image and text towers on image-report
              pairs (rrg/training/contrastive.py), when `training.clip_epochs` > 0; the vision stage then
              starts from the pre-trained image tower
3. vision     the open_clip encoder and finding heads, supervised by each study's labels and entities;
              then the heads' suggestion thresholds, tuned on the validation split
4. index      the training studies, for retrieving reference reports: their image embeddings
              (cosine), or the LRE trained on their entity logits and their points on the ball
              (hyperbolic); either way, how close in labels the references of validation studies are
5. language   the demo Mistral trained on report text alone, each report after its findings line
              (skipped for a pretrained base)
6. drafting   the visual prompt (projector; Sinkhorn fusion and disease clues as the config has them)
              and a LoRA adapter trained to draft a report from the image, its suggested findings and
              its references (prompt layout of DESIGN.md section 6; rrg/training/drafting.py); with
              hyperbolic retrieval the training references are the studies nearest in labels, as REVTAF
              does, and the validation ones those the LRE retrieves, as at inference

Each stage writes its part of the bundle and is recorded in `.train/state.json`; a stage under way
is checkpointed every few steps. `config.json` is written last: a bundle with one is complete.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import geoopt
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from prompts.instructions import report_cue
from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.lre import ranking_loss
from retrieval.medfuse_clip import MedFuseLoss
from retrieval.metrics import mean_top1_hamming
from rrg.bundle import (
    CONFIG,
    INDEX,
    LLM,
    new_enhancer,
    replace_part,
    save_vision,
    write_config,
)
from rrg.config import ModelConfig
from rrg.data.manifest import labeler_of
from rrg.data.training_data import StudySet, findings_first, load_split
from rrg.model.generator import build_demo_llm, load_llm
from rrg.model.references import ReferenceRetriever
from rrg.model.suggested_findings import (
    NEVER,
    example_f1,
    finding_names,
    suggest,
    tune_thresholds,
    with_no_finding,
)
from rrg.model.vision import FindingHeads, VisionEncoder, encode_images, open_clip_config
from rrg.training.checkpoints import Checkpoints, batch_at, config_fingerprint, steps_per_epoch
from rrg.training.contrastive import alignment_report, contrastive_loss, report_tokens
from rrg.training.drafting import train_drafting
from rrg.training.losses import FindingLoss, loss_tail
from rrg.training.tokenizer import train_report_tokenizer

STAGES = ("tokenizer", "contrastive", "vision", "index", "language", "drafting")
# Each stage's random seed is training.seed plus its own fixed offset, so that a new stage leaves the
# others' seeds (and the bundles they train) as they were.
_SEED_OFFSETS = {"tokenizer": 0, "vision": 1, "index": 2, "language": 3, "drafting": 4, "contrastive": 5}
Log = Callable[[str], None]


class Trainer:
    """One training run of one bundle."""

    def __init__(
        self, data: Path, out: Path, config: ModelConfig, progress: bool = True, log: Log = print,
    ):
        self.data, self.out, self.config, self.progress, self.log = Path(data), Path(out), config, progress, log
        self.training = config.training
        self.checkpoints = Checkpoints(self.out, config_fingerprint(config.to_dict(), str(self.data.resolve())))
        self._train: StudySet | None = None
        self._val: StudySet | None = None

    # --- data, loaded once on first use ---------------------------------------------------------

    @property
    def train_set(self) -> StudySet:
        if self._train is None:
            self._train = load_split(self.data, "train", self.config.vision.image_size, self.progress)
        return self._train

    def targets(self, study_set: StudySet) -> list[str]:
        """The reports as the generator learns to write them (finding sentences first, by config)."""
        if not self.training.findings_first:
            return study_set.reports
        return [findings_first(r) for r in study_set.reports]

    @property
    def val_set(self) -> StudySet:
        if self._val is None:
            self._val = load_split(self.data, "val", self.config.vision.image_size, self.progress)
        return self._val

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> dict:
        torch.set_num_threads(self.training.threads)
        started = time.perf_counter()
        if self.checkpoints.resuming:
            self.log(f"resuming: stages done: {', '.join(self.checkpoints.state['done']) or 'none'}")
        for stage in STAGES:
            if self.checkpoints.done(stage) is not None:
                continue
            self._seed(stage)
            stage_started = time.perf_counter()
            summary = getattr(self, f"_{stage}")()
            summary["seconds"] = round(time.perf_counter() - stage_started, 1)
            self.checkpoints.finish(stage, summary)
            self.log(f"stage {stage} done in {summary['seconds']} s: {json.dumps(summary)}")
        stages = self.checkpoints.state["done"]
        facts = {
            "trained_on": {"data": str(self.data), "train_studies": stages["vision"]["train_studies"]},
            "training_summary": stages,
            "training_seconds_this_run": round(time.perf_counter() - started, 1),
            "labeler": labeler_of(self.data),
            "versions": _versions(),
        }
        write_config(self.out, self.config, **facts)
        self.checkpoints.remove()
        return facts

    def _seed(self, stage: str) -> None:
        seed = self.training.seed + _SEED_OFFSETS[stage]
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def steps(
        self,
        stage: str,
        count: int,
        batch_size: int,
        epochs: int,
        modules: dict[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        train_step: Callable[[np.ndarray], torch.Tensor],
    ) -> list[float]:
        """The optimizer loop of a stage: checkpointed, resumable, with a progress bar."""
        total = epochs * steps_per_epoch(count, batch_size)
        start, extra = self.checkpoints.load_step(stage, modules, optimizer)
        losses: list[float] = extra.get("losses", [])
        if start:
            self.log(f"{stage}: resuming at step {start} of {total}")
        bar = tqdm(range(start, total), desc=stage, unit="step", initial=start, total=total, disable=not self.progress)
        for step in bar:
            loss = train_step(batch_at(step, count, batch_size, self.training.seed))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if (step + 1) % self.training.checkpoint_every == 0 and step + 1 < total:
                self.checkpoints.save_step(stage, step + 1, modules, optimizer, {"losses": losses})
        return losses

    # --- 1. tokenizer ---------------------------------------------------------------------------

    def _tokenizer(self) -> dict:
        generator = self.config.generator
        if generator.base == "demo":
            tokenizer = train_report_tokenizer(self.train_set.reports, generator.vocab_size)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(generator.base)
            if tokenizer.pad_token is None:  # Mistral's has none; batches need one (masked out anyway)
                tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        tokenizer.save_pretrained(str(self.out / LLM))
        return {"vocab_size": len(tokenizer)}

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.out / LLM))

    # --- 2. contrastive (MedFuse-CLIP) ----------------------------------------------------------

    def _contrastive(self) -> dict:
        if self.training.clip_epochs == 0:
            return {"skipped": "training.clip_epochs is 0: the vision stage starts from random weights"}
        data = self.train_set
        encoder = VisionEncoder(open_clip_config(self.config.vision.open_clip_model))
        loss = MedFuseLoss()
        tokens = report_tokens(data.reports, encoder)
        modules = {"encoder": encoder, "loss": loss}
        params = [p for m in modules.values() for p in m.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.training.clip_lr, weight_decay=0.01)
        encoder.train()
        terms: list[tuple[float, float]] = []

        def train_step(batch: np.ndarray) -> torch.Tensor:
            out = contrastive_loss(encoder, loss, _jitter(data.images[batch]), tokens[batch], data.label_status[batch])
            terms.append((float(out.info_nce.detach()), float(out.margin.detach())))
            return out.total

        losses = self.steps(
            "contrastive", len(data), self.training.vision_batch, self.training.clip_epochs, modules, optimizer,
            train_step,
        )
        encoder.eval()
        torch.save(encoder.state_dict(), self.checkpoints.folder / "towers.pt")
        val = alignment_report(encoder, self.val_set.images, report_tokens(self.val_set.reports, encoder),
                               self.training.clip_pca_dim)
        return {
            "final_loss": loss_tail(losses), "temperature": round(loss.temperature, 4),
            "final_info_nce": loss_tail([t[0] for t in terms]), "final_margin": loss_tail([t[1] for t in terms]),
            "val_retrieval": val,
        }

    # --- 3. vision ------------------------------------------------------------------------------

    def _vision(self) -> dict:
        data = self.train_set
        encoder = VisionEncoder(open_clip_config(self.config.vision.open_clip_model))
        if (self.checkpoints.folder / "towers.pt").is_file():  # MedFuse-CLIP pre-trained
            encoder.load_state_dict(torch.load(self.checkpoints.folder / "towers.pt"))
        heads = FindingHeads(encoder.embed_dim)
        criterion = FindingLoss()
        modules = {"encoder": encoder, "heads": heads}
        params = [p for m in modules.values() for p in m.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.training.vision_lr, weight_decay=0.05)
        encoder.train()

        def train_step(batch: np.ndarray) -> torch.Tensor:
            seen = encoder(_jitter(data.images[batch]))
            label_logits, entity_logits = heads(seen.pooled)
            return criterion(label_logits, entity_logits, data.label_targets[batch], data.entity_targets[batch])

        losses = self.steps(
            "vision", len(data), self.training.vision_batch, self.training.vision_epochs, modules, optimizer, train_step
        )
        encoder.eval()
        heads.eval()
        save_vision(self.out, encoder)
        val_probabilities = _probabilities(encoder, heads, self.val_set)
        val_positives = self.val_set.label_targets.numpy() > 0
        thresholds = tune_thresholds(val_probabilities, val_positives)
        heads.thresholds.copy_(torch.from_numpy(thresholds))
        torch.save(heads.state_dict(), self.checkpoints.folder / "heads.pt")
        suggested = with_no_finding(suggest(val_probabilities, thresholds))
        return {
            "train_studies": len(data),
            "final_loss": loss_tail(losses),
            "val_mean_auc_14": _mean_auc(val_probabilities, val_positives),
            "suggestion_thresholds": {n: round(float(t), 2) for n, t in zip(CHEXBERT_LABELS, thresholds) if t < NEVER},
            "val_example_f1_of_suggestions": round(example_f1(suggested, val_positives), 4),
        }

    def trained_vision(self) -> tuple[VisionEncoder, FindingHeads]:
        from rrg.bundle import Bundle

        encoder = Bundle.load_vision(Bundle(self.out, self.config, {}))
        heads = FindingHeads(encoder.embed_dim)
        heads.load_state_dict(torch.load(self.checkpoints.folder / "heads.pt"))
        return encoder, heads.eval()

    # --- 4. index -------------------------------------------------------------------------------

    def _index(self) -> dict:
        encoder, heads = self.trained_vision()
        data = self.train_set
        pooled, _ = encode_images(encoder, data.images)
        with torch.no_grad():
            entity_logits = heads(pooled)[1]
        summary, enhancer = {}, None
        if self.config.retrieval.kind == "hyperbolic":
            enhancer, summary["retriever_final_loss"] = self._train_enhancer(entity_logits, data.label_status)
            torch.save(enhancer.state_dict(), self.checkpoints.folder / "enhancer.pt")
        retriever = ReferenceRetriever.build(pooled, entity_logits, data.ids, data.reports, enhancer)
        replace_part(self.out / INDEX, retriever.index.save)
        # How close in labels the top reference of each validation study is (REVTAF eq. 6).
        val_pooled, _ = encode_images(encoder, self.val_set.images)
        with torch.no_grad():
            val_entity_logits = heads(val_pooled)[1]
        top = [found[0].id for found in retriever.search(val_pooled, val_entity_logits, 1)]
        row_of = {study_id: row for row, study_id in enumerate(data.ids)}
        rows = [row_of[study_id] for study_id in top]
        hamming = mean_top1_hamming(self.val_set.label_status, data.label_status[rows])
        return {"references": len(retriever.index), **summary, "val_mean_top1_hamming": round(hamming, 3)}

    def _train_enhancer(self, entity_logits: torch.Tensor, status: np.ndarray):
        """REVTAF's LRE on the training studies' entity logits: the in-batch ranking loss of eq. 7."""
        enhancer = new_enhancer(self.config.retrieval)
        status = torch.from_numpy(status)
        trainable = [p for p in enhancer.parameters() if p.requires_grad]  # not the ball's curvature
        optimizer = geoopt.optim.RiemannianAdam(trainable, lr=self.training.retriever_lr)
        enhancer.train()

        def train_step(batch: np.ndarray) -> torch.Tensor:
            return ranking_loss(enhancer.pairwise_distances(enhancer(entity_logits[batch])), status[batch])

        losses = self.steps(
            "retriever", len(status), self.training.retriever_batch, self.training.retriever_epochs,
            {"enhancer": enhancer}, optimizer, train_step,
        )
        return enhancer.eval(), loss_tail(losses)

    def trained_enhancer(self):
        if self.config.retrieval.kind != "hyperbolic":
            return None
        enhancer = new_enhancer(self.config.retrieval)
        enhancer.load_state_dict(torch.load(self.checkpoints.folder / "enhancer.pt"))
        return enhancer.eval()

    # --- 5. language ----------------------------------------------------------------------------

    def _language(self) -> dict:
        generator = self.config.generator
        tokenizer = self.load_tokenizer()
        if generator.base != "demo":
            model = load_llm(generator.base, generator.dtype)
            model.save_pretrained(str(self.out / LLM))
            return {"base": generator.base, "trained": False}
        model = build_demo_llm(generator, tokenizer)
        prompt, data = self.config.prompt, self.train_set

        def ids(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False).input_ids

        # Each report after its own findings line: the base learns to write what the line names.
        cues = [
            [tokenizer.bos_token_id, *ids(report_cue(finding_names(row), prompt.findings_heading))]
            for row in data.label_targets.numpy() > 0
        ]
        targets = [ids(" " + r.strip())[: prompt.max_report_tokens] + [tokenizer.eos_token_id] for r in self.targets(data)]
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.training.lm_lr, weight_decay=0.01)
        model.train()

        def train_step(batch: np.ndarray) -> torch.Tensor:
            longest = max(len(cues[i]) + len(targets[i]) for i in batch)
            input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            labels = torch.full((len(batch), longest), -100)
            for row, i in enumerate(batch):
                cue, target = cues[i], targets[i]
                input_ids[row, : len(cue) + len(target)] = torch.tensor(cue + target)
                mask[row, : len(cue) + len(target)] = 1
                labels[row, len(cue) : len(cue) + len(target)] = torch.tensor(target)  # the cue is not scored
            return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

        losses = self.steps(
            "language", len(targets), self.training.lm_batch, self.training.lm_epochs, {"model": model}, optimizer, train_step
        )
        model.eval()
        replace_part(self.out / LLM, lambda folder: _save_llm(model, tokenizer, folder))
        parameters = sum(p.numel() for p in model.parameters())
        return {"base": "demo", "parameters": parameters, "final_loss": loss_tail(losses)}

    # --- 6. drafting (rrg/training/drafting.py) --------------------------------------------------

    def _drafting(self) -> dict:
        return train_drafting(self)


# --- helpers -------------------------------------------------------------------------------------


def _jitter(images: torch.Tensor) -> torch.Tensor:
    """Light augmentation: a shift of a few pixels and a little exposure change."""
    shift = int(images.shape[-1] * 0.03)
    dx, dy = np.random.randint(-shift, shift + 1, size=2)
    shifted = torch.roll(images, shifts=(int(dy), int(dx)), dims=(-2, -1))
    gain = 1.0 + 0.1 * (torch.rand(len(images), 1, 1, 1) - 0.5)
    return (shifted * gain).clamp(0, 1)


@torch.no_grad()
def _probabilities(encoder: VisionEncoder, heads: FindingHeads, study_set: StudySet) -> np.ndarray:
    """(N, 14) the heads' label probabilities for a split."""
    pooled, _ = encode_images(encoder, study_set.images)
    return torch.sigmoid(heads(pooled)[0]).numpy()


def _mean_auc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Mean ROC AUC over the labels with both classes present."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(targets[:, j], scores[:, j]) for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
    return round(float(np.mean(aucs)), 4) if aucs else None


def _save_llm(model: nn.Module, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _versions() -> dict[str, str]:
    import open_clip
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "open_clip": open_clip.__version__}


def train_bundle(
    data: Path, out: Path, config: ModelConfig, progress: bool = True, log: Log = print, force: bool = False,
) -> dict:
    """Train a bundle; resumes an unfinished run in `out` unless `force`."""
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    if (out / CONFIG).is_file():
        raise ValueError(f"{out} already holds a trained bundle; use --force to train again")
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(data, out, config, progress, log).run()
