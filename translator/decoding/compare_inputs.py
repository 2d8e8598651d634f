"""What `translator compare` compares: the runs' configs, the sentences, each run's outputs
(decoded once, then read from its run dir), training word counts, and the keys that differ.

    cfgs = load_configs(paths)                        # one line per problem, nothing written
    sources, refs, name = texts_to_compare(paths, cfgs, "test")
    outputs = outputs_of(paths, cfgs, sources, refs, name, {"beam_size": 5})
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path

from translator import run_dir as rd
from translator.config import Config, ConfigError, flat_config
from translator.decoding import evaluations
from translator.decoding.compare import count_words
from translator.decoding.scoring import references_for, score
from translator.errors import InputError
from translator.files import atomic_write_text

log = logging.getLogger("translator")


def load_configs(paths: list[Path]) -> list[Config]:
    """Each run's config; runs must translate into one language, alike in casing."""
    if len(set(map(str, paths))) < len(paths):
        raise InputError("a run is given twice: compare different runs")
    cfgs = []
    for path in paths:
        if not (path / rd.BEST).exists() and (path / rd.CONFIG).exists():
            raise rd.RunError(f"{path} has no {rd.BEST}: it has not validated yet")
        cfgs.append(rd.read_config(path) if (path / rd.CONFIG).exists() else _not_a_run(path))
    first = cfgs[0].data
    for path, cfg in zip(paths[1:], cfgs[1:]):
        if cfg.data.tgt_lang != first.tgt_lang:
            raise ConfigError(
                f"{path} translates into {cfg.data.tgt_lang!r}, {paths[0]} into "
                f"{first.tgt_lang!r}: only runs into one language compare"
            )
        if cfg.data.lowercase != first.lowercase:
            raise ConfigError(
                f"{path} and {paths[0]} differ in data.lowercase: their outputs "
                "are scored against different references"
            )
    return cfgs


def _not_a_run(path: Path):
    what = "does not exist" if not path.exists() else f"is not a run dir (no {rd.CONFIG})"
    raise rd.RunError(f"{path} {what}")


def texts_to_compare(paths, cfgs, split: str, src: Path | None = None, ref: Path | None = None):
    """(sources, references, the split's name): `src`/`ref`, or the split of every run's data,
    which must hold the same sentences."""
    from translator.data.multi30k import read_lines
    from translator.data.sources import resolve_split

    if src is not None:
        sources, refs = read_lines(src), read_lines(ref)
        if len(sources) != len(refs):
            raise InputError(f"{src} has {len(sources)} lines but {ref} has {len(refs)}")
        return sources, refs, str(src)
    texts = {}
    for path, cfg in zip(paths, cfgs):
        data = _data_key(cfg)
        if data not in texts:  # runs of one data config share one read
            try:
                texts[data] = _split_texts(path, cfg, split)
            except (ConfigError, InputError, OSError) as err:
                why = str(err).splitlines()[0]
                raise InputError(f"{path}: no split {split!r} ({why})") from None
        if texts[data][0] != texts[_data_key(cfgs[0])][0]:
            raise InputError(f"{path}'s {split} split holds other sentences than {paths[0]}'s")
    sources, refs = texts[_data_key(cfgs[0])]
    name = split if split.startswith("parent:") else resolve_split(cfgs[0], split)
    return sources, references_for(refs, cfgs[0].data.lowercase), name


def _split_texts(path: Path, cfg: Config, split: str) -> tuple[list[str], list[str]]:
    """A split's sources and references, kept in the run dir under the fingerprint of its files
    (their checksums, or size and modification time), so a second compare skips `datasets`."""
    from translator.data.sources import fingerprint, read_split_texts, resolve_split

    if split.startswith("parent:") or cfg.data.source == "hub":
        return read_split_texts(cfg, split)
    name = resolve_split(cfg, split)
    digest = evaluations.text_sha256([_data_key(cfg), name, fingerprint(cfg, name)])[:16]
    cache = path / rd.EVALUATIONS / f"split-{digest}.texts"
    try:
        sources, refs = json.loads(cache.read_text(encoding="utf-8"))
        return sources, refs
    except (OSError, ValueError):
        pass
    sources, refs = read_split_texts(cfg, split)
    try:
        cache.parent.mkdir(exist_ok=True)
        atomic_write_text(cache, json.dumps([sources, refs], ensure_ascii=False))
    except OSError:
        pass  # a run dir we may not write to: read the split each time
    return sources, refs


def _data_key(cfg: Config) -> str:
    return json.dumps(dataclasses.asdict(cfg.data), sort_keys=True, default=str)


def outputs_of(paths, cfgs, sources, refs, name: str, flags: dict, no_cache=False, quiet=False):
    """{run path: its outputs}, with one set of decoding options for all (the first run's,
    changed by `flags`). Outputs recorded in a run dir are read; the others are decoded,
    scored and recorded there."""
    opts = cfgs[0].decode.override(**flags)
    outputs = {}
    for path, cfg in zip(paths, cfgs):
        models = [evaluations.weights_sha256(path / rd.BEST)]
        key = evaluations.key_of(models, "torch", sources, opts)
        found = None if no_cache else rd.read_evaluation(path, key)
        if found:
            outputs[str(path)] = found[1]
            continue
        from translator.decoding.translator import Translator

        if not quiet:
            log.info("decoding %s with %s (%d sentences)", path, name, len(sources))
        translator = Translator.load(path)
        translator.options = opts
        started = time.perf_counter()
        hyps = translator.translate(sources)
        seconds = time.perf_counter() - started
        result = score(hyps, refs, cfg.data.tgt_lang)
        result.update(evaluations.describe(translator, opts, name, name, seconds))
        evaluations.record(path, key, result, hyps)
        outputs[str(path)] = hyps
    return outputs


def train_word_counts(path: Path, cfg: Config) -> Counter | None:
    """How often each word occurs in the run's training targets (cached in the run dir)."""
    from translator.data.sources import read_texts

    digest = evaluations.text_sha256([_data_key(cfg)])[:12]
    cache = path / rd.EVALUATIONS / f"train-words-{digest}.counts"
    try:
        return Counter(json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    try:
        _, targets = read_texts(cfg, cfg.data.train_split)
    except (ConfigError, InputError, OSError) as err:
        log.warning("no word frequencies: the training split cannot be read (%s)", err)
        return None
    counts = count_words(targets)
    try:
        cache.parent.mkdir(exist_ok=True)
        atomic_write_text(cache, json.dumps(counts))
    except OSError:
        pass
    return counts


def config_diff(paths: list[Path], cfgs: list[Config]) -> dict[str, dict[str, str]]:
    """{key: {run: value}} for every config key whose value differs between the runs."""
    flats = [flat_config(cfg) for cfg in cfgs]
    keys = sorted({k for flat in flats for k in flat})
    return {
        key: {str(p): str(flat.get(key)) for p, flat in zip(paths, flats)}
        for key in keys
        if len({json.dumps(flat.get(key), default=str) for flat in flats}) > 1
    }
