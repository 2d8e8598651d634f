"""Stage 4, training: the `Trainer` and what only training uses (its step, schedule and budget,
validation, optimizer, distributed processes, checkpoints and averaging, fine-tuning and resume
configs, progress and metrics logs, signals).

May import decoding (validation translates), model, data and the shared top-level modules;
never serving or cli.
"""
