"""Typed, validated configuration: YAML file + `--set key=value` overrides -> `Config`.

    cfg = load_config("configs/multi30k.yaml", ["model.d_model=128", "train.max_minutes=5"])

Loading takes three steps: read the YAML into a dict, apply the dotted overrides to that dict
(values parsed as YAML scalars, so `true`, `3e-4` and `null` mean what they mean in a file), then
build the frozen dataclasses below, checking every key and type. Any problem raises one
`ConfigError` whose message names the file and the full dotted key.

The defaults in the classes are the default recipe, what a bare `translator train` trains: an
EN->DE Transformer for Multi30k that trains in 90 minutes on a 2-core CPU, a tiny, heavily
regularised model over a joint BPE with all embeddings shared (Wu et al. 2021's Transformer-Tiny),
its learning rate annealed to 0 within the budget. The comments give the measured alternatives
(docs/results.md). A YAML file lists only what differs; configs/multi30k.yaml lists nothing.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from translator.config_rules import config_problems, decode_problems
from translator.errors import UserError


class ConfigError(UserError, ValueError):
    """A config problem a user can fix: bad key, bad type, impossible value, unreadable file."""

    exit_code = 2  # a setting or argument to fix, as usage errors


@dataclass(frozen=True)
class DataConfig:
    source: str = "multi30k"  # multi30k | files | hub: where the corpus comes from
    # multi30k: folder with {split}.{lang}.gz; None: $TRANSLATOR_DATA_DIR or the user cache
    dir: str | None = None
    cache_dir: str | None = None  # prepared corpora; None: $TRANSLATOR_CACHE_DIR or user cache
    verify_checksums: bool = True  # multi30k: check official files against their pinned sha256
    hub: str | None = None  # hub: a dataset on the Hugging Face Hub, or a save_to_disk folder
    hub_config: str | None = None  # hub: the dataset's configuration, e.g. de-en
    columns: tuple[str, str] | None = None  # table columns of source and target text
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Split names (multi30k, hub) or paths (files); None: the source's own names
    # (multi30k: train, val, test2016; hub: train, validation, test; files must set them).
    train_split: str | None = None
    valid_split: str | None = None
    test_split: str | None = None
    num_proc: int | None = None  # processes that tokenize; None: all cores
    lowercase: bool = False  # German capitalises nouns and sacreBLEU scores cased text
    max_len: int = 100  # tokens per side; longer training pairs are dropped (and counted)
    max_ratio: float | None = None  # drop training pairs with one side this many times longer
    dedup: bool = False  # drop exact duplicate training pairs (after normalization)
    max_tokens: int = 4096  # batch budget: sentences x longest side, padding included (2048: worse)
    max_sentences: int | None = None  # optional cap on sentences per batch
    pool_batches: int = 100  # length-sort pools of about this many batches (more: less padding)
    # With train.init_from: this share of the training pairs is drawn from the parent run's own
    # training data, to limit forgetting (0.2: one pair in five)
    replay: float = 0.0
    # BiT (Ding et al., 2021): this share of the training budget (steps, epochs or minutes,
    # whichever ends first) trains on the pairs and their reverse (DE->EN) together, the rest on
    # the pairs alone; switched at the end of the epoch that reaches it. Needs vocab.joint
    bidirectional: float = 0.0
    # More training pairs, joined to the training split before cleaning and the vocabulary:
    # files read as for source files (a table, or a prefix P of P.<lang> text files, .gz too),
    # whatever data.source is; e.g. the synthetic corpora of `translator synthesize`
    extra_train: tuple[str, ...] = ()


@dataclass(frozen=True)
class VocabConfig:
    kind: str = "bpe"  # bpe: subword pieces of spaCy tokens (no <unk> for rare words) | word
    joint: bool = True  # one vocabulary (and one BPE) for both languages
    min_freq: int = 2  # word: tokens seen fewer times in train become <unk>
    max_size: int | None = None  # word: keep at most this many tokens (specials excluded)
    bpe_size: int = 10000  # bpe: vocabulary size the BPE learns (specials included)
    # The BPE and the vocabulary are learned from at most this many training pairs, sampled
    train_sentences: int = 1_000_000
    # bpe: chance to skip each merge when segmenting the training split, sampled anew every epoch
    # (BPE-dropout); validation, test and translation always use every merge
    bpe_dropout: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 128  # width of every layer
    n_heads: int = 4  # attention heads (d_model must divide by it)
    encoder_layers: int = 4
    decoder_layers: int = 4
    d_ff: int = 256  # inner width of the feed-forward network
    dropout: float = 0.2  # on embeddings and sublayer outputs (0.3: val beam BLEU -0.3)
    attention_dropout: float = 0.0  # 0.1, two seeds: val +0.1/+0.5, test2016 +0.7/-0.3 (noise)
    # Inside the feed-forward network, after the ReLU; None: the same as dropout (the annotated
    # transformer). 0, as in fairseq's Transformer, which Wu et al.'s recipe ran on (0.3: val
    # loss +0.04).
    activation_dropout: float | None = 0.0
    positions: str = "sinusoidal"  # sinusoidal | learned
    max_positions: int = 256  # longest sequence the model accepts (tokens incl. <sos>/<eos>)
    # pre (LayerNorm first) | post (the paper's). Pre at equal time, two comparisons: chrF
    # +0.5-1.1 on val and test2016 (p < 0.05 each), beam BLEU +0.1-0.8 (not significant)
    norm: str = "pre"
    tie_target_embeddings: bool = True  # target embedding = output projection
    share_all_embeddings: bool = True  # source embedding too (needs vocab.joint)
    # Training-time noise (off until measured to help; decoding never sees it):
    word_dropout: float = 0.0  # chance to zero a source token's embedding
    word_dropout_tgt: float = 0.0  # ... a decoder input token's (teacher forcing)
    word_replace: float = 0.0  # chance to replace a source token by a random one
    word_replace_tgt: float = 0.0  # ... a decoder input token
    layerdrop: float = 0.0  # chance to skip each encoder and decoder layer (Fan et al., 2019)
    # Generate the target from its last token to its first (trained on reversed targets; the
    # output is put back in order): a second opinion for `rerank`, not a better translator
    right_to_left: bool = False


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | mps
    # auto | fp32 | bf16 | fp16. fp32: bf16 autocast is slower for a model this narrow
    # (scripts/bench_train.py), on CPUs and on an H100
    precision: str = "fp32"
    compile: bool = False  # torch.compile the model
    threads: int | None = None  # CPU threads; None: all cores
    optimizer: str = "adam"  # adam | adamw | nag (SGD with Nesterov momentum: fairseq's default)
    lr: float = 5e-3  # peak learning rate, reached at the end of warmup (3e-3: level)
    betas: tuple[float, float] = (0.9, 0.98)  # adam and adamw
    momentum: float = 0.99  # nag
    weight_decay: float = 0.0
    warmup_steps: int = 2000  # linear warmup (1,000 ended 3 val BLEU lower)
    # linear: straight down to 0 at the budget's end (val +1.6 BLEU over inverse_sqrt) |
    # inverse_sqrt | constant
    schedule: str = "linear"
    label_smoothing: float = 0.1  # (0.2: val beam BLEU -0.3 to -0.7; 0.05: level)
    rdrop: float = 0.0  # weight of R-Drop's KL between two dropout passes; 0: off (on: ~2.5x/step)
    # R-Drop only once this share of the budget is used (0: from the start), checked before
    # each step: most steps at full speed, R-Drop where it helped, on a trained model
    rdrop_from: float = 0.0
    clip_norm: float | None = 1.0  # max gradient norm; None: no clipping
    accumulate: int = 1  # batches per optimizer step
    max_steps: int | None = None  # optimizer steps; None: no limit
    max_epochs: int | None = 200
    # wall-clock budget for training (90: 65-69 epochs on 2 AVX-512 cores, 41 on AVX2)
    max_minutes: float | None = 90
    log_every: int = 50  # steps between metrics.jsonl lines
    tensorboard: bool = True  # also write TensorBoard events to RUN/tensorboard (rank 0)
    valid_every: int | None = None  # steps between validations; None: every epoch
    valid_max_sentences: int | None = None  # validate BLEU on a prefix of val; None: all
    patience: int | None = None  # stop after this many validations without a better BLEU
    # Keep the weights of the last N validations; average them at the end (kept if the average
    # validates better)
    average_checkpoints: int = 10
    # Fine-tuning: a new run that starts from this run dir's best weights, model and vocabulary
    # (`translator train --init-from RUN`); the optimizer, schedule and best score start afresh
    init_from: str | None = None
    # More sets every validation scores with greedy BLEU (metrics.jsonl's keep_bleu, curves.png),
    # to see what a fine-tuned run keeps: `parent:valid`, `parent:test` (or `parent:NAME`: a split
    # of the init_from run's data), or a split of this run's data source (`test`, a name, or a
    # file or prefix for data.source files)
    keep_eval: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode: the one set of options of `translate`, `evaluate`, `serve` and the Python
    API (each command's flags override these keys of the run's config)."""

    beam_size: int = 5  # 1: greedy search
    # GNMT alpha (`--alpha`): > 0 favours longer outputs; 1.5 chosen on val (1 to 2.5)
    length_penalty: float = 1.5
    max_len_a: float = 1.5  # output length limit = a * source length + b ...
    max_len_b: int = 10
    max_len: int | None = None  # ... or at most this many output tokens
    nbest: int = 1  # translations per input, best first (beam search keeps at least this many)
    batch_size: int = 128  # sentences per decoding batch
    # score only the run's shortlist of likely target tokens for the batch's source tokens
    # (a smaller output layer); runs made before shortlists decode with every token
    shortlist: bool = True
    # minimum Bayes risk: of the beam's n-best (beam_size of them), the output the others agree
    # with most by this sentence metric (chrf | bleu); null: the beam's best
    mbr: str | None = None
    # n-best reranking: a weights file of `translator tune-rerank` (its n-best size, the
    # right-to-left and channel runs that rescore, their weights); null: the beam's best
    rerank: str | None = None
    # CPU threads, set when the engine loads (never per call); None: `translate` takes one for a
    # few sentences, all cores for more
    threads: int | None = None

    def output_limit(self, src_len: int, max_positions: int) -> int:
        """Most output tokens (<eos> excluded) for a source of `src_len` tokens (<eos>
        included), capped so that the positions fit the model."""
        if self.max_len is not None:
            return min(self.max_len, max_positions - 1)
        return min(int(self.max_len_a * src_len + self.max_len_b), max_positions - 1)

    def override(self, **changes) -> DecodeConfig:
        """A copy with the changes that are not None, checked like a config file's."""
        updated = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        problems = decode_problems(updated)
        if problems:
            raise ConfigError(problems[0])
        return updated


@dataclass(frozen=True)
class Config:
    name: str = "multi30k"
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"  # package data: in wheels too
DEFAULT_CONFIG = SHIPPED_CONFIGS / "multi30k.yaml"


def find_config(path: str | Path | None) -> Path:
    """A config file: `path` as given (relative to the current folder), else a shipped config of
    that name (`tiny`, `tiny.yaml`), else the default."""
    if path is None:
        return DEFAULT_CONFIG
    path = Path(path)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"config file not found: {path} (shipped configs: {names})")


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML config, apply `a.b=value` overrides, build and validate a `Config`."""
    raw, source = read_raw_config(path, overrides)
    return build_config(raw, source, overrides)


def read_raw_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[dict, str]:
    """A config file as the nested dict it holds, `overrides` applied; and its path."""
    path = find_config(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', err)})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    raw.setdefault("name", path.stem)
    apply_overrides(raw, overrides)
    return raw, str(path)


def build_config(raw: dict, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`config_from_dict`, with a problem in a key the command line set blamed on it."""
    try:
        return config_from_dict(raw, source=source)
    except ConfigError as err:
        raise _blame_override(err, source, overrides) from None


def _blame_override(err: ConfigError, source: str, overrides) -> ConfigError:
    """A problem with a key the command line set is the command line's, not the file's:
    `--set model.d_model=-1: must be > 0, got -1`."""
    message = str(err).removeprefix(f"{source}: ")
    for item in reversed(overrides):  # the last --set of a key is the one in force
        key = override_key(item)
        if message.startswith(f"{key} must"):
            return ConfigError(f"--set {item}: {message[len(key) + 1 :]}")
        if re.search(rf"(^|\W){re.escape(key)}(\W|$)", message):
            return ConfigError(f"--set {item}: {message}")
    return err


def override_key(item: str) -> str:
    """The dotted key a `--set key=value` item sets."""
    return item.partition("=")[0].strip()


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> None:
    """Set dotted keys in `raw` from `key=value` strings, values parsed as YAML scalars."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects KEY=VALUE such as model.d_model=256, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = raw
        *parents, leaf = key.split(".")
        if len(parents) > 1:  # keys are `section.key`: sections hold no sections
            raise ConfigError(f"--set {item}: {parents[1]!r} is not a section")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a section")
            node = child
        node[leaf] = value


# The split names each source uses when the config names none: train, validation, test.
DEFAULT_SPLITS = {
    "multi30k": ("train", "val", "test2016"),
    "hub": ("train", "validation", "test"),
}
SPLIT_KEYS = ("train_split", "valid_split", "test_split")


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    # A run's config.yaml also says what software made it (dump_config): not a setting.
    raw = {key: value for key, value in raw.items() if key != VERSIONS}
    cfg = _build(Config, raw, "", source)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")
    return dataclasses.replace(cfg, data=_resolve_splits(cfg.data, source))


def _resolve_splits(d: DataConfig, source: str) -> DataConfig:
    """Fill in the source's default split names; make file paths absolute, so that a run's saved
    config finds its data from any working directory."""
    defaults = DEFAULT_SPLITS.get(d.source)
    values = {}
    for key, default in zip(SPLIT_KEYS, defaults or (None,) * 3):
        value = getattr(d, key)
        if value is None and default is None:
            raise ConfigError(f"{source}: data.source {d.source} needs data.{key} (a path)")
        if d.source == "files":
            value = str(Path(value).expanduser().absolute())
        values[key] = value if value is not None else default
    values["extra_train"] = tuple(str(Path(p).expanduser().absolute()) for p in d.extra_train)
    return dataclasses.replace(d, **values)


def config_to_dict(cfg: Config) -> dict:
    """Plain dict (tuples as lists) that `config_from_dict` turns back into the same Config."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def flat_config(cfg: Config) -> dict:
    """{"model.d_model": 256, ...}: every key of `cfg` by its dotted name (as `--set` takes it)."""
    flat = {}
    for section, keys in config_to_dict(cfg).items():
        if isinstance(keys, dict):
            flat.update({f"{section}.{key}": value for key, value in keys.items()})
        else:
            flat[section] = keys
    return flat


VERSIONS = "versions"  # config.yaml's record of the software that made a run (not a setting)


def dump_config(cfg: Config, versions: dict | None = None) -> str:
    """The YAML of `cfg`; with `versions`, a `versions:` mapping after the settings (what made
    the run), which loading skips."""
    raw = config_to_dict(cfg)
    if versions:
        raw[VERSIONS] = versions
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def _build(cls, raw, prefix: str, source: str):
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} "
            f"(known in {where}: {', '.join(sorted(names))})"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value or {}, f"{prefix}{name}.", source)
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}", source)
    return cls(**values)


def _coerce(value, hint, key: str, source: str):
    """Return `value` as type `hint` or raise a ConfigError naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is tuple and args[-1:] == (Ellipsis,):  # tuple[str, ...]: a list of any length
        if isinstance(value, (str, int, float)):
            value = [value]  # `--set train.keep_eval=parent:valid`: a list of one
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"{source}: {key} must be a list of {len(args)} values, got {value!r}"
            )
        return tuple(
            _coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))
        )
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML reads "5e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
