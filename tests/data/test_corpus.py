import numpy as np
from conftest import CONFIGS, REAL_DATA, requires_real_data, toy_overrides

from translator.config import load_config
from translator.data.corpus import IdArray, ParallelIds, prepare
from translator.data.tokenization import Tokenizer


def test_prepare_builds_then_reuses_the_cache(toy_config, fresh_cache):
    first = prepare(toy_config)
    second = prepare(toy_config)
    assert not first.cached and second.cached
    assert first.path == second.path
    assert set(first.splits) == {"train", "val", "test2016"}
    assert second.src_vocab == first.src_vocab
    assert np.array_equal(second.splits["train"].tgt.ids, first.splits["train"].tgt.ids)


def test_a_changed_setting_gets_a_new_cache(toy_data, toy_config, fresh_cache):
    base = prepare(toy_config)
    other = prepare(
        load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data, "vocab.min_freq=150"))
    )
    assert other.path != base.path and not other.cached
    assert len(other.src_vocab) < len(base.src_vocab)


def test_ids_are_the_vocab_ids_of_the_spacy_tokens(toy_data, toy_config):
    from translator.data.multi30k import read_parallel

    corpus = prepare(toy_config)
    src, tgt = read_parallel("val", "en", "de", str(toy_data), verify=False)
    (tokens,) = Tokenizer("de").tokenize(tgt[:1])
    assert corpus.tgt_vocab.decode(corpus.splits["val"].tgt[0].tolist()) == tokens


def test_a_large_corpus_is_read_from_disk_batch_by_batch(toy_config, monkeypatch):
    from translator.data import corpus as corpus_module
    from translator.data.batching import make_batch

    in_memory = prepare(toy_config)
    monkeypatch.setattr(corpus_module, "READ_WHOLE_BYTES", 0)  # every ids file counts as large
    on_disk = prepare(toy_config)
    train, disk_train = in_memory.splits["train"], on_disk.splits["train"]
    assert isinstance(disk_train.src.ids, corpus_module.DiskIds)
    assert np.array_equal(np.asarray(disk_train.tgt.ids), train.tgt.ids)
    vocab = in_memory.tgt_vocab
    batch = make_batch(train, [3, 0, 7], vocab.pad_id, vocab.sos_id, vocab.eos_id)
    disk_batch = make_batch(disk_train, [3, 0, 7], vocab.pad_id, vocab.sos_id, vocab.eos_id)
    assert batch.src.equal(disk_batch.src) and batch.tgt_out.equal(disk_batch.tgt_out)
    kept, _ = disk_train.filter_length(9)  # a selection is copied into memory
    assert kept.src[0].tolist() == train.filter_length(9)[0].src[0].tolist()
    # ... reading only the selected sentences (replay draws a few pairs from millions)
    monkeypatch.setattr(corpus_module.DiskIds, "__array__", None)  # no whole-file read
    picked = disk_train.select(np.array([7, 2, 2, 30]))
    expected = train.select(np.array([7, 2, 2, 30]))
    assert np.array_equal(picked.tgt.ids, expected.tgt.ids)
    assert np.array_equal(picked.src.offsets, expected.src.offsets)


def test_filter_length_drops_long_and_empty_pairs():
    pairs = ParallelIds(
        IdArray.from_lists([[1] * 3, [1] * 9, [], [1] * 2]),
        IdArray.from_lists([[2] * 3, [2] * 2, [2], [2] * 8]),
    )
    kept, dropped = pairs.filter_length(5)
    assert dropped == 3 and len(kept) == 1 and kept.src[0].tolist() == [1, 1, 1]


@requires_real_data
def test_prepare_on_real_multi30k():
    cfg = load_config(CONFIGS / "multi30k.yaml", [f"data.dir={REAL_DATA}"])
    corpus = prepare(cfg)
    stats = corpus.stats["splits"]  # meta.json: what `prepare` prints
    assert stats["train"]["pairs"] == 29000 and stats["test2016"]["pairs"] == 1000
    # The default: one joint BPE vocabulary, so no word is out of vocabulary.
    assert corpus.src_vocab == corpus.tgt_vocab and 8000 < len(corpus.src_vocab) <= 10000
    assert stats["val"]["tgt_oov"] < 0.001 and stats["test2016"]["src_oov"] < 0.001
    assert prepare(cfg).cached
    words = prepare(
        load_config(
            CONFIGS / "multi30k.yaml",
            [f"data.dir={REAL_DATA}", "vocab.kind=word", "vocab.joint=false"]
            + ["model.share_all_embeddings=false"],
        )
    )
    assert 5000 < len(words.src_vocab) < 8000 and 6000 < len(words.tgt_vocab) < 10000
    assert words.stats["splits"]["val"]["tgt_oov"] < 0.06


def test_extra_training_pairs_join_the_training_split_only(toy_data, tmp_path, fresh_cache):
    """data.extra_train: a text-file prefix and a table add their pairs to train (words only
    they hold enter the vocabulary); val and test stay as they were; the cache knows the files."""
    import os

    from conftest import write_split

    write_split(tmp_path, "extra", [("A zebra sleeps.", "Ein Zebra schläft.")] * 3)
    table = tmp_path / "more.tsv"
    table.write_text("en\tde\nA yak runs.\tEin Yak rennt.\nA yak sits.\tEin Yak sitzt.\n")
    base = prepare(load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data)))
    sets = toy_overrides(toy_data, f"data.extra_train=[{tmp_path / 'extra'}, {table}]")
    joined = prepare(load_config(CONFIGS / "tiny.yaml", sets))

    assert joined.path != base.path
    assert len(joined.splits["train"]) == len(base.splits["train"]) + 5
    assert [len(joined.splits[s]) for s in ("val", "test2016")] == [40, 40]
    assert joined.stats["extra_train"] == {str(tmp_path / "extra"): 3, str(table): 2}
    assert "zebra" in joined.src_vocab.stoi and "Yak" in joined.tgt_vocab.stoi
    assert "zebra" not in base.src_vocab.stoi

    os.utime(table, ns=(0, 0))  # a changed extra file is a new corpus, not a stale cache hit
    assert prepare(load_config(CONFIGS / "tiny.yaml", sets)).path != joined.path


def test_extra_training_files_must_exist(toy_data):
    import pytest

    from translator.config import ConfigError

    cfg = load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data, "data.extra_train=nowhere"))
    with pytest.raises(ConfigError, match="no such file: .*nowhere"):
        prepare(cfg)
    with pytest.raises(ConfigError, match="data.extra_train: '' names no file"):
        load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data, "data.extra_train=['']"))
