"""`rrg train`: a data set folder in, a bundle out, in resumable stages (`rrg.training.stages`).

Each stage writes its part of the bundle and is recorded in `.train/state.json`; a stage under way
is checkpointed every few steps (`rrg.training.loop`). `config.json` is written last, with the widths
the modules were built with: a bundle with one is complete. Under torchrun every rank runs every stage
(`rrg.training.distributed`); rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from rrg.bundle import CONFIG, write_config
from rrg.config import MACHINE_DRAFT_NOTICE, PHANTOM_NOTICE, ModelConfig
from rrg.data.manifest import is_phantom, labeler_of
from rrg.training.distributed import Ranks
from rrg.training.loop import Log, TrainingRun
from rrg.training.stages import STAGES


def run_stages(ctx: TrainingRun) -> dict:
    """Run every stage not yet done, then write config.json; the bundle's facts."""
    torch.set_num_threads(max(1, ctx.training.threads // ctx.ranks.local_world))  # the cores are shared
    started = time.perf_counter()
    ctx.log(f"training on {ctx.ranks.world} rank(s), device {ctx.device}: {json.dumps(how_it_runs(ctx))}")
    if ctx.checkpoints.resuming:
        ctx.log(f"resuming: stages done: {', '.join(ctx.checkpoints.state['done']) or 'none'}")
    for stage in STAGES:
        if ctx.checkpoints.done(stage.NAME) is not None:
            continue
        ctx.seed(ctx.training.seed + stage.SEED_OFFSET)
        stage_started = time.perf_counter()
        summary = stage.run(ctx)
        summary["seconds"] = round(time.perf_counter() - stage_started, 1)
        ctx.checkpoints.finish(stage.NAME, summary)
        ctx.ranks.barrier()
        ctx.log(f"stage {stage.NAME} done in {summary['seconds']} s: {json.dumps(summary)}")
    stages = ctx.checkpoints.state["done"]
    widths = stages["drafting"]["widths"]  # recorded by the stage that builds the visual prompt
    facts = {
        "trained_on": {"data": str(ctx.data), "train_studies": stages["vision"]["train_studies"]},
        "training_summary": {stage: {k: v for k, v in summary.items() if k != "widths"}
                             for stage, summary in stages.items()},
        "training_seconds_this_run": round(time.perf_counter() - started, 1),
        "trained_with": how_it_runs(ctx),
        "labeler": labeler_of(ctx.data),
        "versions": _versions(),
    }
    ctx.write(lambda: write_config(ctx.out, as_trained(ctx.config, ctx.data), widths, **facts))
    ctx.checkpoints.remove()
    ctx.close()
    return facts


def how_it_runs(ctx: TrainingRun) -> dict:
    """Where and how the steps ran (printed at the start, kept in the bundle's config.json)."""
    training = ctx.training
    return {"ranks": ctx.ranks.world, "device": str(ctx.device) if ctx.ranks.world == 1 else ctx.device.type,
            "precision": training.precision, "gradient_checkpointing": training.gradient_checkpointing,
            "accumulate": training.accumulate, "clip_norm": training.clip_norm, "schedule": training.schedule,
            "warmup_fraction": training.warmup_fraction, "base_4bit": training.base_4bit}


def as_trained(config: ModelConfig, data: Path) -> ModelConfig:
    """The config as the bundle records it: a demo (with the phantom notice on every draft) exactly when
    its data set's images are phantoms, whatever the config was named; so a small config trained on
    MIMIC-CXR never claims phantoms, and a large one trained on the phantom set always says it."""
    if is_phantom(data):
        return dataclasses.replace(config, demo=True, notice=PHANTOM_NOTICE)
    return dataclasses.replace(config, demo=False, notice=config.notice if not config.demo else MACHINE_DRAFT_NOTICE)


def _versions() -> dict[str, str]:
    import open_clip
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "open_clip": open_clip.__version__}


def train_bundle(
    data: Path, out: Path, config: ModelConfig, progress: bool = True, log: Log = print, force: bool = False,
    ranks: Ranks | None = None,
) -> dict:
    """Train a bundle; resumes an unfinished run in `out` unless `force`. Under torchrun every rank calls
    this with the same arguments (`ranks` defaults to the torchrun environment, else one process)."""
    out = Path(out)
    own_ranks = ranks is None
    ranks = ranks or Ranks.from_environment(config.training.device)
    try:
        if not force and (out / CONFIG).is_file():  # every rank sees it and stops alike
            raise ValueError(f"{out} already holds a trained bundle; use --force to train again")
        if ranks.main:
            if force and out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
        ranks.barrier()
        return run_stages(TrainingRun(data, out, config, progress, log, ranks))
    finally:
        if own_ranks:
            ranks.close()
