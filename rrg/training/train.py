"""`rrg train`: a data set folder in, a bundle out, in resumable stages (`rrg.training.stages`).

Each stage writes its part of the bundle and is recorded in `.train/state.json`; a stage under way
is checkpointed every few steps (`rrg.training.loop`). `config.json` is written last, with the widths
the modules were built with: a bundle with one is complete.
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
from rrg.training.loop import Log, TrainingRun
from rrg.training.stages import STAGES


def run_stages(ctx: TrainingRun) -> dict:
    """Run every stage not yet done, then write config.json; the bundle's facts."""
    torch.set_num_threads(ctx.training.threads)
    started = time.perf_counter()
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
        ctx.log(f"stage {stage.NAME} done in {summary['seconds']} s: {json.dumps(summary)}")
    stages = ctx.checkpoints.state["done"]
    widths = stages["drafting"]["widths"]  # recorded by the stage that builds the visual prompt
    facts = {
        "trained_on": {"data": str(ctx.data), "train_studies": stages["vision"]["train_studies"]},
        "training_summary": {stage: {k: v for k, v in summary.items() if k != "widths"}
                             for stage, summary in stages.items()},
        "training_seconds_this_run": round(time.perf_counter() - started, 1),
        "labeler": labeler_of(ctx.data),
        "versions": _versions(),
    }
    write_config(ctx.out, as_trained(ctx.config, ctx.data), widths, **facts)
    ctx.checkpoints.remove()
    return facts


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
) -> dict:
    """Train a bundle; resumes an unfinished run in `out` unless `force`."""
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    if (out / CONFIG).is_file():
        raise ValueError(f"{out} already holds a trained bundle; use --force to train again")
    out.mkdir(parents=True, exist_ok=True)
    return run_stages(TrainingRun(data, out, config, progress, log))
