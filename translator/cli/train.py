"""`translator train` (one process, or several under torchrun) and `translator average`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from translator.cli.app import (
    ConfigOpt,
    InitFromOpt,
    RunOpt,
    SetOpt,
    _check_at_least_one,
    _fail,
    _setup_logging,
    app,
    user_errors,
)


@app.command(
    epilog="Examples: `translator train`, `translator train -c configs/tiny.yaml`, "
    "`translator train --resume --run-dir runs/multi30k-20261125-120000`, "
    "`translator train --init-from runs/general --set data.source=files "
    "--set data.train_split=medical/train --set data.valid_split=medical/dev.tsv "
    "--set data.test_split=medical/test.tsv --set train.keep_eval=parent:test`"
)
@user_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Where to write the run [default: `runs/<config-name>-<timestamp>`]."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --run-dir (default: the latest) where it stopped. "
            "Only train.* budget and logging keys may be changed with --set.",
        ),
    ] = False,
    init_from: InitFromOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    nproc: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine, launched with torchrun: one per GPU, "
            "or CPU processes (gloo). data.max_tokens is per process."
        ),
    ] = 1,
) -> None:
    """Train a Transformer; prepares the data first when its cache is missing.

    Stops at train.max_steps, train.max_epochs or train.max_minutes, whichever comes first.
    Ctrl-C saves a checkpoint that `--resume` continues from. For several machines, start
    `torchrun ... -m translator train` on each (see the README).
    """
    from translator.run_dir import STATE, latest_run, new_run_dir
    from translator.training.finetune import training_config
    from translator.training.resume import resume_config
    from translator.training.trainer import Trainer

    _check_at_least_one(nproc=nproc)
    _setup_logging()
    if resume:
        if config is not None:
            raise _fail("--resume takes the config from the run dir; drop --config", 2)
        if init_from is not None:
            raise _fail("--resume continues a run, --init-from starts a new one: pick one", 2)
        run_dir = run_dir or latest_run(needs=STATE)
        cfg = resume_config(run_dir, set_ or [])
    else:
        cfg = training_config(config, set_ or [], init_from)
    if nproc > 1:
        if not resume:  # prepare once here: the workers then only open the cache
            from translator.data.corpus import prepare as prepare_corpus

            prepare_corpus(cfg)
        args = ["train", "--run-dir", str(run_dir or new_run_dir(cfg))]
        args += ["--resume"] if resume else (["--config", str(config)] if config else [])
        args += ["--init-from", str(init_from)] if init_from else []
        args += [x for pair in set_ or [] for x in ("--set", pair)]
        args += [] if progress else ["--no-progress"]
        raise typer.Exit(_torchrun(nproc, args))
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume, progress=progress)
    trainer.train()
    # Stopped by a signal: saved and resumable, but not done: `train && evaluate` must stop.
    code = 128 + int(trainer.stop_signal) if trainer.stop_signal else 0
    if trainer.dist.enabled:  # a torchrun worker
        trainer.dist.exit(code)
    if code:
        raise typer.Exit(code)


def _torchrun(nproc: int, args: list[str]) -> int:
    """Run `translator <args>` in `nproc` processes with torchrun on this machine."""
    import subprocess

    env = dict(os.environ)
    # torchrun would give each process one thread; share the cores out instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "translator", *args]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # the workers got the Ctrl-C too, and save
        return 130


@app.command(
    epilog="Example: `translator average --last 5`, then `translator evaluate --bleu "
    "--weights averaged.safetensors`"
)
@user_errors
def average(
    run: RunOpt = None,
    last: Annotated[
        int | None, typer.Option(help="Average the newest N kept checkpoints [default: all].")
    ] = None,
) -> None:
    """Average a run's kept checkpoints into `averaged.safetensors` in the run dir.

    Training keeps the weights of its last `train.average_checkpoints` validations under
    `checkpoints/` (and averages them itself at the end); this command redoes it for any N.
    """
    from translator.model.weights import load_run, save_weights
    from translator.run_dir import AVERAGED, RunError, kept_checkpoints, latest_run
    from translator.training.checkpoints import average_into

    _check_at_least_one(last=last)
    loaded = load_run(run or latest_run())
    paths = kept_checkpoints(loaded.path)
    if not paths:
        raise RunError(
            f"{loaded.path} kept no checkpoints (train with --set train.average_checkpoints=10)"
        )
    paths = paths[-last:] if last else paths
    average_into(loaded.model, paths)
    save_weights(loaded.model, loaded.path / AVERAGED)
    typer.echo(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name})")
    typer.echo(f"wrote {loaded.path / AVERAGED}")
