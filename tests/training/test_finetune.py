"""Fine-tuning: `translator train --init-from RUN` starts a new run from RUN's weights, model and
vocabulary, on another corpus, with a fresh optimizer, schedule and best score."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, TOY_BPE, assert_one_line_error, tiny, toy_pairs
from safetensors.torch import load_file
from typer.testing import CliRunner

from translator import run_dir as rd
from translator.cli.main import app
from translator.config import ConfigError
from translator.data.bundle import read_bundle
from translator.data.corpus import prepare
from translator.model.weights import unwrap
from translator.training.data_feed import TrainingData
from translator.training.finetune import init_from_config
from translator.training.trainer import Trainer

runner = CliRunner()

# The new domain: horses and bikes, words the parent never read, and a character it never saw.
NEW_SUBJECTS = {
    "a horse": "Ein Pferd",
    "the biker": "Der Fahrradfahrer",
    "a crêpe cook": "Ein Koch",
}


def domain_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    pairs = []
    for i, (en, de) in enumerate(toy_pairs(n, seed)):
        subject, new = list(NEW_SUBJECTS.items())[i % len(NEW_SUBJECTS)]
        first, rest = en.split(" ", 2)[:2], en.split(" ", 2)[2]
        de_rest = de.split(" ", 2)[2]
        if first[0] == "Two":  # "Two girls run ...": keep one subject for a singular verb
            continue
        pairs.append((f"{subject.capitalize()} {rest}", f"{new} {de_rest}"))
    return pairs


def write_files(folder: Path, split: str, pairs) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, column in (("en", 0), ("de", 1)):
        (folder / f"{split}.{lang}").write_text("".join(p[column] + "\n" for p in pairs), "utf-8")
    return str(folder / split)


@pytest.fixture
def parent(toy_data, tmp_path) -> Path:
    """A tiny joint-BPE run trained on the toy corpus."""
    cfg = tiny(toy_data, *TOY_BPE, "train.max_steps=30", "train.valid_every=30")
    return Trainer(cfg, run_dir=tmp_path / "parent", progress=False).train()


@pytest.fixture
def new_domain(tmp_path) -> list[str]:
    """--set pairs that point a config at the new domain's files."""
    folder = tmp_path / "horses"
    return [
        "data.source=files",
        f"data.train_split={write_files(folder, 'train', domain_pairs(300, seed=5))}",
        f"data.valid_split={write_files(folder, 'val', domain_pairs(40, seed=6))}",
        f"data.test_split={write_files(folder, 'test', domain_pairs(40, seed=7))}",
    ]


def finetune_config(parent: Path, new_domain: list[str], *extra: str):
    sets = [*new_domain, "train.max_steps=10", "train.max_minutes=null", *extra]
    return init_from_config(CONFIGS / "tiny.yaml", sets, parent)


def test_a_fine_tuned_run_starts_from_the_parent_and_resets_the_best_score(parent, new_domain):
    cfg = finetune_config(parent, new_domain, "train.valid_every=5", "train.keep_eval=parent:valid")
    assert cfg.model == rd.read_config(parent).model  # the model section is the parent's
    assert cfg.train.init_from == str(parent.resolve()) and cfg.train.lr == 0.003  # tiny.yaml's

    trainer = Trainer(cfg, run_dir=parent.parent / "child", progress=False)
    trainer.setup()
    parent_weights = load_file(parent / rd.BEST)
    for name, tensor in unwrap(trainer.model).state_dict().items():
        if name in parent_weights:
            assert torch.equal(tensor, parent_weights[name]), name
    assert trainer.state.step == 0 and trainer.state.best_bleu < 0  # fresh, not the parent's
    parent_run = read_bundle(parent)
    assert trainer.data.src_vocab == parent_run.src_vocab  # numbered with the parent's ids
    assert trainer.data.subword.to_str() == parent_run.subword.to_str()

    child = Trainer(cfg, run_dir=parent.parent / "child", progress=False).train()
    records = rd.read_metrics(child)
    valid = [r for r in records if "val_bleu" in r]
    assert [r["step"] for r in valid] == [5, 10]  # its own step counter, from 0
    assert valid[0]["best_bleu"] == valid[0]["val_bleu"]  # the first validation is the best
    assert "parent:valid" in valid[0]["keep_bleu"]  # what it keeps of the parent's domain
    assert (child / rd.BEST).exists()
    for name in (rd.SRC_VOCAB, rd.TGT_VOCAB, rd.SUBWORD):
        assert (child / name).read_bytes() == (parent / name).read_bytes()
    origin = json.loads((child / rd.INIT_FROM).read_text())
    assert origin["run"] == str(parent.resolve())
    assert origin["sha256"] == hashlib.sha256((parent / rd.BEST).read_bytes()).hexdigest()


def test_prepare_reports_the_new_corpus_under_the_parents_vocabulary(parent, new_domain):
    sets = [x for pair in new_domain for x in ("--set", pair)]
    result = runner.invoke(app, ["prepare", "-c", str(CONFIGS / "tiny.yaml"), *sets,
                                 "--init-from", str(parent)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"taken from {parent.resolve()}, not rebuilt" in result.output
    # "ê" never occurs in the parent's corpus: it is reported, and becomes <unk>
    assert "characters the vocabulary has never seen: 'ê'" in result.output


def test_new_text_meets_unk_only_for_characters_the_parent_never_saw(parent, new_domain):
    """The parent's vocabulary holds every piece its BPE can make, also those its own training
    text never used: new words made of known characters get ids, not <unk>."""
    cfg = finetune_config(parent, new_domain)
    corpus = prepare(cfg)
    train = corpus.splits[cfg.data.train_split]
    source_texts = [en for en, _ in domain_pairs(300, seed=5)]
    assert not (train.tgt.ids == corpus.tgt_vocab.unk_id).any()
    # one <unk> per "crêpe" ("ê" is the one character the parent never saw), nothing else
    assert (train.src.ids == corpus.src_vocab.unk_id).sum() == sum(
        text.count("ê") for text in source_texts
    )


def test_the_shipped_finetune_config_keeps_the_parents_regularisers(parent, new_domain):
    """finetune.yaml sets no model key: dropout and the rest come from the parent, as a fine-tune
    with the default config always had them."""
    from translator.run_dir import read_config

    cfg = init_from_config(None, [*new_domain, "data.max_len=60"], parent)  # tiny's positions
    assert cfg.model == read_config(parent).model  # dropout 0.0 and activation_dropout None


def test_shape_language_and_untrained_parents_are_refused_with_one_line(parent, new_domain):
    with pytest.raises(ConfigError, match=r"model.d_model=64: a run initialised from .* keeps"):
        finetune_config(parent, new_domain, "model.d_model=64")
    with pytest.raises(ConfigError, match=r"translates en→de, but this config's data is fr→de"):
        finetune_config(parent, new_domain, "data.src_lang=fr")
    # the regularisers may change
    assert finetune_config(parent, new_domain, "model.dropout=0.3").model.dropout == 0.3

    sets = [x for pair in new_domain for x in ("--set", pair)]
    tiny_yaml = str(CONFIGS / "tiny.yaml")
    result = runner.invoke(app, ["train", "-c", tiny_yaml, *sets, "--set", "vocab.bpe_size=500",
                                 "--init-from", str(parent)])  # fmt: skip
    assert_one_line_error(result, 2, "vocab.bpe_size=500: a run initialised from")
    (parent / rd.BEST).unlink()
    result = runner.invoke(app, ["train", *sets, "--init-from", str(parent)])
    assert_one_line_error(result, 1, "has no model.safetensors to start from")
    result = runner.invoke(app, ["train", "--resume", "--init-from", str(parent)])
    assert_one_line_error(result, 2, "pick one")


def test_replay_mixes_the_parents_training_pairs_in(parent, new_domain):
    plain = TrainingData(finetune_config(parent, new_domain), dist=_OneProcess())
    mixed = TrainingData(finetune_config(parent, new_domain, "data.replay=0.25"), _OneProcess())
    new = len(plain.train_pairs)
    assert len(mixed.train_pairs) == new + round(new * 0.25 / 0.75)
    parent_pairs = TrainingData(rd.read_config(parent), _OneProcess()).train_pairs
    parent_sources = {tuple(parent_pairs.src[i]) for i in range(len(parent_pairs))}
    replayed = [tuple(mixed.train_pairs.src[i]) for i in range(new, len(mixed.train_pairs))]
    assert all(src in parent_sources for src in replayed)


def test_evaluate_says_where_a_run_came_from_and_scores_the_parents_splits(parent, new_domain):
    child = Trainer(
        finetune_config(parent, new_domain), run_dir=parent.parent / "c", progress=False
    )
    child = child.train()
    result = runner.invoke(app, ["evaluate", "--run", str(child), "--split", "parent:test",
                                 "--greedy", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["init_from"]["run"] == str(parent.resolve()) and report["split"] == "parent:test"
    text = runner.invoke(app, ["evaluate", "--run", str(child), "--greedy"])
    assert f"fine-tuned from {parent.resolve()}" in text.output


class _OneProcess:
    rank, world_size, is_main = 0, 1, True

    def broadcast(self, obj):
        return obj
