"""The training loop every stage of `rrg train` runs in: one `TrainingRun` per bundle being trained.

It holds what the stages share: the data set's splits (loaded once, on first use), the config, where
the run is (`Ranks`: one process, or one rank of many under torchrun, and its device), the checkpoints
under `BUNDLE/.train/`, the logs under `BUNDLE/logs/`, and `steps()`, the optimizer loop of a stage,
plus the parts an earlier stage has trained (`trained_vision`, `trained_enhancer`, `load_tokenizer`).
Each stage is a module of `rrg.training.stages` with `run(ctx: TrainingRun) -> summary`.

One optimizer step of a stage trains on a global batch (`epoch_batches`: the same order on every run and
any number of ranks). Each rank takes its part of it (`Ranks.shard`), in `training.accumulate`
micro-batches; a stage's `train_step(step)` returns its micro-batch's share of the step's loss (the
stage divides by counts over the whole global batch, so the shares add up to the loss one process
would compute on the whole batch), and DistributedDataParallel averages the gradients over the ranks.
Stages whose loss compares the studies of a batch with each other (the LRE's ranking, MedFuse-CLIP's
contrast) do not shard: every rank computes the whole batch, and the ranks stay equal without talking.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from rrg.bundle import LLM
from rrg.config import ModelConfig
from rrg.data.image_cache import CachedImages
from rrg.data.training_data import StudySet, findings_first, load_split
from rrg.model import factory
from rrg.model.vision import FindingHeads, VisionEncoder, encode_images
from rrg.training.checkpoints import Checkpoints, config_fingerprint, epoch_batches, steps_per_epoch
from rrg.training.distributed import Ranks
from rrg.training.logs import TrainingLogs
from rrg.training.schedule import rate_factor, set_rate

Log = Callable[[str], None]


@dataclass
class Step:
    """One micro-batch of an optimizer step, as a stage's `train_step` sees it."""

    number: int  # the stage's optimizer step, from 0
    rows: np.ndarray  # the studies of this micro-batch (indices into the stage's data)
    whole: np.ndarray  # the studies of the whole global batch of the step, over every rank
    images: torch.Tensor | None = None  # (b, 1, S, S) the micro-batch's images on the device, if the stage reads any


StepResult = torch.Tensor | tuple[torch.Tensor, dict[str, float]]


class TrainingRun:
    """One training run of one bundle: its data, config, ranks, checkpoints, logs and optimizer loop."""

    def __init__(self, data: Path, out: Path, config: ModelConfig, progress: bool = True, log: Log = print,
                 ranks: Ranks | None = None):
        self.ranks = ranks or Ranks.from_environment(config.training.device)
        self.device = self.ranks.device
        self.main = self.ranks.main
        self.data, self.out, self.config = Path(data), Path(out), config
        self.progress = progress and self.main
        self.log: Log = log if self.main else (lambda message: None)
        self.training = config.training
        self.loader_workers = config.training.loader_workers
        fingerprint = config_fingerprint(config.to_dict(), str(self.data.resolve()))
        self.checkpoints = Checkpoints(self.out, fingerprint, writes=self.main)
        self.logs = TrainingLogs(self.out, enabled=self.main)
        self._train: StudySet | None = None
        self._val: StudySet | None = None
        self.step_values: dict[str, list[dict[str, float]]] = {}  # what each step of a stage logged, this run

    # --- data, loaded once on first use ---------------------------------------------------------

    @property
    def train_set(self) -> StudySet:
        if self._train is None:
            self._train = self._load("train")
        return self._train

    @property
    def val_set(self) -> StudySet:
        if self._val is None:
            self._val = self._load("val")
        return self._val

    def _load(self, split: str) -> StudySet:
        """A split; rank 0 builds the image cache first, the other ranks then open it."""
        size = self.config.vision.image_size
        if self.main:
            study_set = load_split(self.data, split, size, self.progress, self.loader_workers, self.log)
        self.ranks.barrier()
        if not self.main:
            study_set = load_split(self.data, split, size, False, self.loader_workers, self.log)
        return study_set

    def images(self, images: CachedImages, batches: Sequence[np.ndarray]):
        """(indices, images on the device) for each batch, read ahead by DataLoader workers."""
        pin = self.device.type == "cuda" and self.loader_workers > 0
        for rows, pixels in images.batches(batches, self.loader_workers, pin_memory=pin):
            yield rows, pixels.to(self.device, non_blocking=pin)

    def autocast(self):
        """bfloat16 autocast on the run's device when `training.precision` is bf16 (the same code on CPU)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.training.precision == "bf16")

    @torch.no_grad()
    def encode(self, encoder: VisionEncoder, images: CachedImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled embeddings (N, E) and patch tokens (N, P, W) of a split's images, in order, on the CPU."""
        pooled, tokens = [], []
        for _, batch in self.images(images, in_order(len(images), 128)):
            with self.autocast():
                batch_pooled, batch_tokens = encode_images(encoder, batch)
            pooled.append(batch_pooled.float().cpu())
            tokens.append(batch_tokens.float().cpu())
        return torch.cat(pooled), torch.cat(tokens)

    def targets(self, study_set: StudySet) -> list[str]:
        """The reports as the generator learns to write them (finding sentences first, by config)."""
        if not self.training.findings_first:
            return study_set.reports
        return [findings_first(r) for r in study_set.reports]

    def write(self, action: Callable[[], object]) -> None:
        """Run a write of the bundle on rank 0, then let every rank go on (and read it). Every rank calls
        this at the same point: a write that may be skipped decides so inside `action`, on rank 0."""
        if self.main:
            action()
        self.ranks.barrier()

    # --- the loop -------------------------------------------------------------------------------

    def seed(self, seed: int) -> None:
        """Seed every random generator a stage draws from (the same on every rank: equal initial weights)."""
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every device's generator, CUDA's included

    def steps(
        self,
        stage: str,
        count: int,
        batch_size: int,
        epochs: int,
        modules: dict[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        train_step: Callable[[Step], StepResult],
        images: CachedImages | None = None,
        parallel: Sequence[nn.Module] | None = None,
        shard: bool = True,
        validate: Callable[[], dict[str, float]] | None = None,
        autocast: bool = True,
        lengths: np.ndarray | None = None,
    ) -> list[float]:
        """The optimizer loop of a stage: sharded over the ranks, checkpointed, resumable, logged.

        `train_step(step)` returns its micro-batch's share of the step's loss, or (share, values) with
        values to log (the shares of the loss's terms, and "tokens" the micro-batch processed); with
        `images`, `step.images` holds the micro-batch's images, read ahead by DataLoader workers.
        `modules` are checkpointed by name; `parallel` (default: those that are nn.Modules) are the ones
        DistributedDataParallel keeps equal over the ranks. With `shard` False every rank computes the
        whole batch in one micro-batch. `validate()` runs on rank 0 every `training.eval_every` steps.
        `autocast` False keeps a stage in float32 whatever `training.precision` says. `lengths` (each
        study's tokens) group batches by length when `training.group_by_length` is on.
        Returns the loss of every step of the stage.
        """
        total = epochs * steps_per_epoch(count, batch_size)
        base_rates = [group["lr"] for group in optimizer.param_groups]
        start, extra = self.checkpoints.load_step(stage, modules, optimizer)
        losses: list[float] = extra.get("losses", [])
        if start:
            self.log(f"{stage}: resuming at step {start} of {total}")
        if self.ranks.rank:  # dropout draws differ between ranks (rank 0 keeps the single-process stream)
            torch.manual_seed(self.training.seed * 1_000_003 + 7919 * self.ranks.rank + start)
        self.logs.start(stage, start)
        ranks = self.ranks if shard else Ranks(device=self.device)
        accumulate = self.training.accumulate if shard else 1
        if batch_size < ranks.world * accumulate:
            raise ValueError(f"{stage}: a global batch of {batch_size} cannot feed {ranks.world} ranks x "
                             f"{accumulate} micro-batches; raise the batch or lower training.accumulate")
        modules_to_sync = list(parallel) if parallel is not None else [m for m in modules.values() if isinstance(m, nn.Module)]
        forward = _StepModule(modules_to_sync, train_step)
        if ranks.distributed:
            forward = _data_parallel(forward)
        trainable = [p for group in optimizer.param_groups for p in group["params"]]

        per_epoch = steps_per_epoch(count, batch_size)
        grouping = lengths if self.training.group_by_length else None
        epochs_batches = {epoch: epoch_batches(count, batch_size, self.training.seed, epoch, grouping)
                          for epoch in range(start // per_epoch, epochs)}
        wholes = {step: epochs_batches[step // per_epoch][step % per_epoch] for step in range(start, total)}
        micro = [(step, part) for step in range(start, total)
                 for part in np.array_split(ranks.shard(wholes[step]), accumulate)]
        if images is None:
            feed = ((part, None) for _, part in micro)
        else:
            feed = self.images(images, [part for _, part in micro])
        bar = tqdm(range(start, total), desc=stage, unit="step", initial=start, total=total, disable=not self.progress)
        for step in bar:
            started = time.perf_counter()
            rate = set_rate(optimizer, base_rates,
                            rate_factor(step, total, self.training.schedule, self.training.warmup_fraction))
            optimizer.zero_grad(set_to_none=True)
            values: dict[str, float] = {}
            loss = 0.0
            for j in range(accumulate):
                rows, pixels = next(feed)
                last = j == accumulate - 1
                sync = contextlib.nullcontext() if last or not ranks.distributed else forward.no_sync()
                with sync:
                    with self.autocast() if autocast else contextlib.nullcontext():
                        share, logged = _split(forward(Step(step, rows, wholes[step], pixels)))
                    (share * ranks.world).backward()  # DDP averages over the ranks; the shares add up
                loss += float(share.detach())
                for name, value in logged.items():
                    values[name] = values.get(name, 0.0) + float(value)
            if self.training.clip_norm:
                values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, self.training.clip_norm))
            optimizer.step()
            names = sorted(k for k in values if k != "grad_norm")
            summed = ranks.sum([loss] + [values[k] for k in names])
            loss, values = summed[0], {**values, **dict(zip(names, summed[1:]))}
            losses.append(loss)
            self.step_values.setdefault(stage, []).append(values)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            self._log_step(stage, step + 1, loss, values, rate, len(wholes[step]), time.perf_counter() - started)
            if self.training.eval_every and validate is not None and (step + 1) % self.training.eval_every == 0:
                self._validate(stage, step + 1, validate)
            if (step + 1) % self.training.checkpoint_every == 0 and step + 1 < total:
                self.checkpoints.save_step(stage, step + 1, modules, optimizer, {"losses": losses})
        self.logs.flush()
        return losses

    def terms_tail(self, stage: str) -> dict[str, float | None]:
        """The mean of the last 20 steps' value of each logged loss term of a stage (this run's steps)."""
        rows = self.step_values.get(stage, [])
        names = [k for k in (rows[-1] if rows else {}) if k not in ("tokens", "grad_norm")]
        return {name: round(float(np.mean([r[name] for r in rows[-20:]])), 4) for name in names}

    def _log_step(self, stage: str, step: int, loss: float, values: dict[str, float], rate: float,
                  samples: int, seconds: float) -> None:
        tokens = values.get("tokens")
        row = {"loss": round(loss, 6), **{k: round(v, 6) for k, v in values.items() if k != "tokens"}, "lr": rate,
               "samples_per_s": round(samples / seconds, 2)}
        if tokens is not None:
            row["tokens_per_s"] = round(tokens / seconds, 1)
        if self.device.type == "cuda":
            row["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self.logs.write(stage, step, row)

    def _validate(self, stage: str, step: int, validate: Callable[[], dict[str, float]]) -> None:
        if self.main:
            values = validate()
            self.logs.write(stage, step, values, kind="val")
            self.log(f"{stage} step {step}: validation {values}")
        self.ranks.barrier()

    # --- what earlier stages trained ------------------------------------------------------------

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.out / LLM))

    def trained_vision(self) -> tuple[VisionEncoder, FindingHeads]:
        """The vision stage's encoder (saved in the bundle) and finding heads (in the checkpoints), on the device."""
        encoder = factory.load_vision(self.out)
        heads = factory.finding_heads(encoder.embed_dim)
        heads.load_state_dict(torch.load(self.checkpoints.folder / "heads.pt", map_location="cpu"))
        return encoder.to(self.device).eval(), heads.to(self.device).eval()

    def trained_enhancer(self):
        """The index stage's LRE (hyperbolic retrieval), else None; on the CPU (it searches the index)."""
        if self.config.retrieval.kind != "hyperbolic":
            return None
        enhancer = factory.retrieval_enhancer(self.config.retrieval)
        enhancer.load_state_dict(torch.load(self.checkpoints.folder / "enhancer.pt", map_location="cpu"))
        return enhancer.eval()

    def close(self) -> None:
        self.logs.close()


class _StepModule(nn.Module):
    """The modules a stage trains, with its train_step as the forward: what DistributedDataParallel wraps."""

    def __init__(self, modules: Sequence[nn.Module], train_step: Callable[[Step], StepResult]):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.train_step = train_step

    def forward(self, step: Step) -> StepResult:
        return self.train_step(step)


def _data_parallel(module: _StepModule) -> DistributedDataParallel:
    """DDP over the trainable parameters only: the frozen ones (a 7B base) are neither broadcast nor reduced."""
    frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
    frozen += [name for name, _ in module.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
    # Some trainable parameters sit out a whole stage (the text tower in the vision stage): a static graph
    # finds them in the first step and leaves their gradients None on every rank alike.
    return DistributedDataParallel(module, device_ids=None, static_graph=True)


def _split(result: StepResult) -> tuple[torch.Tensor, dict[str, float]]:
    return result if isinstance(result, tuple) else (result, {})


def in_order(count: int, batch: int) -> list[np.ndarray]:
    """Batches of indices 0..count-1 in order, `batch` at a time (the last may be shorter)."""
    return [np.arange(start, min(start + batch, count)) for start in range(0, count, batch)]


def jitter(images: torch.Tensor, rows: np.ndarray, step: int, seed: int) -> torch.Tensor:
    """Light augmentation: a shift of a few pixels and a little exposure change, drawn for each study
    from (seed, step, study), so a study is jittered alike however the batch is shared out or resumed."""
    shift = int(images.shape[-1] * 0.03)
    out = torch.empty_like(images)
    for i, row in enumerate(rows):
        draw = np.random.default_rng([seed, step, int(row)])
        dy, dx = (int(v) for v in draw.integers(-shift, shift + 1, size=2))
        gain = 1.0 + 0.1 * (float(draw.random()) - 0.5)
        out[i] = torch.roll(images[i], shifts=(dy, dx), dims=(-2, -1)) * gain
    return out.clamp_(0, 1)
