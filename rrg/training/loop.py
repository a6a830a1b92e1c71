"""The training loop every stage of `rrg train` runs in: one `TrainingRun` per bundle being trained.

It holds what the stages share: the data set's splits (loaded once, on first use), the config, the
checkpoints under `BUNDLE/.train/`, and `steps()`, the optimizer loop of a stage (checkpointed every
`training.checkpoint_every` steps, resumable, with a progress bar), plus the parts an earlier stage
has trained (`trained_vision`, `trained_enhancer`, `load_tokenizer`). Each stage is a module of
`rrg.training.stages` with `run(ctx: TrainingRun) -> summary`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rrg.bundle import LLM
from rrg.config import ModelConfig
from rrg.data.image_cache import CachedImages
from rrg.data.training_data import StudySet, findings_first, load_split
from rrg.model import factory
from rrg.model.vision import FindingHeads, VisionEncoder, encode_images
from rrg.training.checkpoints import Checkpoints, batch_at, config_fingerprint, steps_per_epoch

Log = Callable[[str], None]


class TrainingRun:
    """One training run of one bundle: its data, config, checkpoints and optimizer loop."""

    def __init__(self, data: Path, out: Path, config: ModelConfig, progress: bool = True, log: Log = print):
        self.data, self.out, self.config, self.progress, self.log = Path(data), Path(out), config, progress, log
        self.training = config.training
        self.loader_workers = config.training.loader_workers
        self.checkpoints = Checkpoints(self.out, config_fingerprint(config.to_dict(), str(self.data.resolve())))
        self._train: StudySet | None = None
        self._val: StudySet | None = None

    # --- data, loaded once on first use ---------------------------------------------------------

    @property
    def train_set(self) -> StudySet:
        if self._train is None:
            self._train = load_split(self.data, "train", self.config.vision.image_size, self.progress, self.loader_workers, self.log)
        return self._train

    @property
    def val_set(self) -> StudySet:
        if self._val is None:
            self._val = load_split(self.data, "val", self.config.vision.image_size, self.progress, self.loader_workers, self.log)
        return self._val

    def encode(self, encoder: VisionEncoder, images: CachedImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled embeddings (N, E) and patch tokens (N, P, W) of a split's images, in order."""
        outputs = [encode_images(encoder, batch) for batch in images.in_order(128, self.loader_workers)]
        return torch.cat([pooled for pooled, _ in outputs]), torch.cat([tokens for _, tokens in outputs])

    def targets(self, study_set: StudySet) -> list[str]:
        """The reports as the generator learns to write them (finding sentences first, by config)."""
        if not self.training.findings_first:
            return study_set.reports
        return [findings_first(r) for r in study_set.reports]

    # --- the loop -------------------------------------------------------------------------------

    def seed(self, seed: int) -> None:
        """Seed every random generator a stage draws from."""
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
        train_step: Callable[..., torch.Tensor],
        images: CachedImages | None = None,
    ) -> list[float]:
        """The optimizer loop of a stage: checkpointed, resumable, with a progress bar.

        train_step(batch) gets the indices of each step's studies (a fixed order per seed and epoch); with
        `images`, train_step(batch, pixels) gets their images too, read ahead by DataLoader workers.
        """
        total = epochs * steps_per_epoch(count, batch_size)
        start, extra = self.checkpoints.load_step(stage, modules, optimizer)
        losses: list[float] = extra.get("losses", [])
        if start:
            self.log(f"{stage}: resuming at step {start} of {total}")
        order = [batch_at(step, count, batch_size, self.training.seed) for step in range(start, total)]
        feed = ((b,) for b in order) if images is None else images.batches(order, self.loader_workers)
        bar = tqdm(zip(range(start, total), feed), desc=stage, unit="step", initial=start, total=total,
                   disable=not self.progress)
        for step, inputs in bar:
            loss = train_step(*inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if (step + 1) % self.training.checkpoint_every == 0 and step + 1 < total:
                self.checkpoints.save_step(stage, step + 1, modules, optimizer, {"losses": losses})
        return losses

    # --- what earlier stages trained ------------------------------------------------------------

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.out / LLM))

    def trained_vision(self) -> tuple[VisionEncoder, FindingHeads]:
        """The vision stage's encoder (saved in the bundle) and finding heads (in the checkpoints)."""
        encoder = factory.load_vision(self.out)
        heads = factory.finding_heads(encoder.embed_dim)
        heads.load_state_dict(torch.load(self.checkpoints.folder / "heads.pt"))
        return encoder, heads.eval()

    def trained_enhancer(self):
        """The index stage's LRE (hyperbolic retrieval), else None."""
        if self.config.retrieval.kind != "hyperbolic":
            return None
        enhancer = factory.retrieval_enhancer(self.config.retrieval)
        enhancer.load_state_dict(torch.load(self.checkpoints.folder / "enhancer.pt"))
        return enhancer.eval()


def jitter(images: torch.Tensor) -> torch.Tensor:
    """Light augmentation: a shift of a few pixels and a little exposure change."""
    shift = int(images.shape[-1] * 0.03)
    dx, dy = np.random.randint(-shift, shift + 1, size=2)
    shifted = torch.roll(images, shifts=(int(dy), int(dx)), dims=(-2, -1))
    gain = 1.0 + 0.1 * (torch.rand(len(images), 1, 1, 1) - 0.5)
    return (shifted * gain).clamp(0, 1)
