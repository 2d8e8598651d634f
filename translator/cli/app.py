"""The Typer app every command registers with, and what the commands share: one-line usage
errors, `user_errors`, logging, and the options declared once (config, run,
weights, ensemble, and the decoding options)."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of click, whose exceptions are these
    from typer._click import exceptions as usage
except ImportError:  # older Typer runs on click itself
    from click import exceptions as usage


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (an unknown option, a missing value) as one line on stderr, exit 2, with the
    closest real option of that command: not Typer's boxed message and its odd suggestions."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except usage.NoArgsIsHelpError as err:
            err.show()  # `translator` alone: the help
            sys.exit(err.exit_code)
        except usage.ClickException as err:
            typer.echo(f"error: {_usage_message(err)}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


def _usage_message(err: usage.ClickException) -> str:
    ctx = getattr(err, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx else ""
    if isinstance(err, usage.NoSuchOption) and ctx is not None:
        options = [o for param in ctx.command.params for o in param.opts + param.secondary_opts]
        close = difflib.get_close_matches(err.option_name, options, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"no such option {err.option_name} for `{ctx.command_path}`{hint}{where}"
    return " ".join(err.format_message().split()) + where


app = typer.Typer(
    cls=_OneLineUsageErrors,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Train, run and score a Transformer translator: Multi30k English→German by default, "
    "any parallel corpus (files or the Hugging Face Hub) by config.",
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file, or the name of a shipped one: multi30k, multi30k-long, seed, "
        "tiny, my-corpus, finetune [default: multi30k, which sets nothing: the defaults of "
        "translator/config.py, the README's configuration table].",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. `--set model.d_model=128` (repeatable).",
    ),
]
InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-from",
        help="Fine-tune: start a new run from this run's best weights, model and vocabulary "
        "(its BPE segments the new data). The optimizer, schedule and best score start afresh; "
        "--config defaults to the shipped `finetune` (small learning rate, short warmup).",
    ),
]
RunOpt = Annotated[
    Path | None,
    typer.Option("--run", "-r", help="Run dir to use [default: the most recent run in runs/]."),
]

EnsembleOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--ensemble",
        "-e",
        help="Also decode with this run's model (repeatable): the models' next-token "
        "probabilities are averaged. Runs must share the vocabulary (same prepared corpus).",
    ),
]

WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Weights file in the run dir (in each --ensemble run too), e.g. "
        "averaged.safetensors [default: best]."
    ),
]

# Decoding options, shared by translate and evaluate. Each overrides a key of the run's
# `decode` config section (translator.config.DecodeConfig), which the Python API takes too.
BeamOpt = Annotated[
    int | None,
    typer.Option("--beam", "-b", help="Beam size [default: the run's decode.beam_size]."),
]
GreedyOpt = Annotated[bool, typer.Option("--greedy", help="Greedy search (= --beam 1).")]
AlphaOpt = Annotated[
    float | None,
    typer.Option(
        "--alpha", help="Length penalty of beam search [default: the run's decode.length_penalty]."
    ),
]
MaxLenOpt = Annotated[
    int | None,
    typer.Option(help="At most this many output tokens [default: 1.5 x source + 10]."),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(help="Sentences per decoding batch [default: the run's decode.batch_size]."),
]
ShortlistOpt = Annotated[
    bool | None,
    typer.Option(
        "--shortlist/--no-shortlist",
        help="Score only the run's lexical shortlist of likely target tokens (faster), or every "
        "token [default: the run's decode.shortlist].",
        show_default=False,
    ),
]
MbrOpt = Annotated[
    str | None,
    typer.Option(
        "--mbr",
        help="Minimum Bayes risk: of the beam's n-best, the output the others agree with most "
        "by `chrf` or `bleu` [default: the run's decode.mbr, else the beam's best].",
        show_default=False,
    ),
]
RerankOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank",
        metavar="FILE",
        help="Rerank the beam's n-best with the models and weights of this file "
        "(`translator tune-rerank` writes it) [default: the run's decode.rerank, else none].",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="CPU threads [default: decode.threads, else 1 for up to 8 sentences and all cores "
        "for more]."
    ),
]

EngineOpt = Annotated[
    str,
    typer.Option(
        help="`torch`, or `ctranslate2`: the run's CTranslate2 export (`translator export`), "
        "with the same tokenization, BPE and detokenization around it."
    ),
]

BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for --confidence


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"translator {version('translator')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass  # the options of `translator` itself; the help text is the app's


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(command):
    """Turn the errors a user can cause (translator.errors.UserError, OSError) into one line on
    stderr and an exit code; any other exception is a bug, said as "internal error"."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from translator.errors import UserError

        try:
            return command(*args, **kwargs)
        except typer.Exit:  # already reported (click's Exit is a RuntimeError)
            raise
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except Exception as err:
            if os.environ.get("TRANSLATOR_DEBUG"):  # developers: keep the traceback
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if isinstance(err, UserError):
                raise _fail(message, err.exit_code) from None
            if isinstance(err, OSError):  # a file or the network: the message names it
                raise _fail(message, 1) from None
            raise _fail(
                f"internal error ({type(err).__name__}: {message}). This is a bug: run again "
                "with TRANSLATOR_DEBUG=1 for the traceback, and report it with that",
                1,
            ) from None

    return wrapper


def _setup_logging() -> None:
    """Log lines go to stdout (stderr is for errors): rich ones on a terminal; in a file or pipe,
    plain lines that never wrap, one event per line, so that a log of a whole run can be
    grepped."""
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%X"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for chatty in ("matplotlib", "PIL", "datasets", "filelock", "urllib3", "sacrebleu"):
        logging.getLogger(chatty).setLevel(logging.ERROR)  # e.g. "building the font cache"


def _check_at_least_one(**options: int | None) -> None:
    for name, value in options.items():
        if value is not None and value < 1:
            raise _fail(f"--{name.replace('_', '-')} must be at least 1, got {value}", 2)
