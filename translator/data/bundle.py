"""A run's bundle: its config, vocabularies and BPE, read and written together (no weights).

    run = read_bundle(Path("runs/a"))   # Run(path, cfg, src_vocab, tgt_vocab, None, subword)
    write_bundle_files(folder, cfg, src_vocab, tgt_vocab, subword)
    check_same_vocabularies(run, other) # an ensemble reads and writes the same ids

The bundle is what every stage needs to encode and decode text as the run did; model/weights.py
adds the weights. File names come from run_dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from translator import run_dir as rd
from translator.config import Config, dump_config
from translator.data.shortlist import Shortlist
from translator.data.subword import Subword
from translator.data.vocab import Vocab
from translator.files import atomic_write_text
from translator.run_dir import (
    CONFIG,
    SHORTLIST,
    SRC_VOCAB,
    SUBWORD,
    TGT_SUBWORD,
    TGT_VOCAB,
    RunError,
    read_config,
    software_versions,
)


@dataclass
class Run:
    path: Path
    cfg: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    model: object  # a Transformer in eval mode; None in a bundle without weights
    subword: Subword | None = None  # the source side's BPE (both sides' when vocab.joint)
    tgt_subword: Subword | None = None  # separate BPEs: the target side's
    shortlist: Shortlist | None = None  # None: a run made before shortlists


def read_bundle(path: Path) -> Run:
    """The config, vocabularies and BPE of a run dir (or of an export folder): no model."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run dir {path} does not exist")
    if not (path / CONFIG).exists():
        raise RunError(f"{path} is not a run dir (no {CONFIG})")
    cfg = read_config(path)
    try:
        src_vocab = Vocab.from_file(path / SRC_VOCAB)
        tgt_vocab = Vocab.from_file(path / TGT_VOCAB)
    except (OSError, ValueError, KeyError) as err:
        raise RunError(f"{path} has a missing or damaged vocabulary: {err}") from None
    subword = tgt_subword = None
    if cfg.vocab.kind == "bpe":
        subword = _read_bpe(path, SUBWORD)
        if not cfg.vocab.joint and (path / TGT_SUBWORD).exists():  # older runs kept one side
            tgt_subword = _read_bpe(path, TGT_SUBWORD)
    shortlist = None
    if (path / SHORTLIST).exists():
        try:
            shortlist = Shortlist.from_file(path / SHORTLIST)
        except Exception as err:  # safetensors raises its own errors on a damaged file
            raise RunError(f"{path} has a damaged {SHORTLIST}: {err}") from None
    return Run(path, cfg, src_vocab, tgt_vocab, None, subword, tgt_subword, shortlist)


def _read_bpe(path: Path, name: str) -> Subword:
    try:
        return Subword.from_file(path / name)
    except Exception as err:  # tokenizers raises a plain Exception on bad JSON
        raise RunError(f"{path} has a missing or damaged {name}: {err}") from None


def write_bundle_files(
    path: Path,
    cfg: Config,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    subword: Subword | None = None,
    tgt_subword: Subword | None = None,
    versions: dict | None = None,
    shortlist: Shortlist | None = None,
) -> None:
    """Config, vocabularies, BPE (both sides' when they are separate) and shortlist: what a
    run needs besides weights. config.yaml records `versions` (default: this process's
    software)."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / CONFIG, dump_config(cfg, versions or software_versions()))
    src_vocab.to_file(path / SRC_VOCAB)
    tgt_vocab.to_file(path / TGT_VOCAB)
    if subword is not None:
        subword.to_file(path / SUBWORD)
    if tgt_subword is not None and not cfg.vocab.joint:
        tgt_subword.to_file(path / TGT_SUBWORD)
    if shortlist is not None:
        shortlist.to_file(path / SHORTLIST)


def check_same_vocabularies(first: Run, other: Run) -> None:
    """Runs that decode together (an ensemble) must read and write the very same token ids."""
    a, b = first.cfg.data, other.cfg.data
    problems = []
    if (a.src_lang, a.tgt_lang, a.lowercase) != (b.src_lang, b.tgt_lang, b.lowercase):
        problems.append("languages or lowercasing")
    if first.src_vocab != other.src_vocab or first.tgt_vocab != other.tgt_vocab:
        problems.append("vocabularies")
    first_bpe = first.subword.to_str() if first.subword else None
    if first_bpe != (other.subword.to_str() if other.subword else None):
        problems.append("BPE")
    if problems:
        raise RunError(
            f"{other.path} cannot decode with {first.path}: different {' and '.join(problems)} "
            "(ensemble runs trained on the same prepared corpus and vocabulary settings)"
        )


def check_parent(parent: Path) -> Run:
    """The bundle of a run that can be fine-tuned: trained, and with every file needed to
    segment new text as it did."""
    run = read_bundle(parent)
    if not (parent / rd.BEST).exists():
        raise RunError(f"{parent} has no {rd.BEST} to start from: train it first")
    v = run.cfg.vocab
    if v.kind == "bpe" and not v.joint and run.tgt_subword is None:
        raise RunError(
            f"{parent} has separate source and target BPEs and keeps only the source's (it was "
            "trained before run dirs kept both); fine-tuning needs the target side's too"
        )
    return run
