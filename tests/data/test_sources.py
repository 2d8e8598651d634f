"""Any parallel corpus: files of every format, Hub-format datasets, other directions, bad input."""

import csv
import gzip
import hashlib
import json

import numpy as np
import pytest
from conftest import (
    CONFIGS,
    REAL_DATA,
    assert_one_line_error,
    invoke,
    requires_real_data,
    toy_pairs,
)

from translator.config import load_config
from translator.data.corpus import prepare
from translator.data.sources import read_texts
from translator.data.tokenization import Tokenizer

PAIRS = toy_pairs(300, seed=5)


def write_text(path, lines, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def write_table(path, pairs, columns=("en", "de")):
    """`pairs` as a table file in the format its name says."""
    name = path.name.removesuffix(".gz")
    rows = [dict(zip(columns, pair)) for pair in pairs]
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    if name.endswith(".jsonl"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif name.endswith(".json"):
        text = json.dumps(rows, ensure_ascii=False)
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        if sep == "\t":
            text = "\t".join(columns) + "\n" + "".join("\t".join(p) + "\n" for p in pairs)
        else:
            import io

            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(columns)
            writer.writerows(pairs)
            text = out.getvalue()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)


def files_config(train, valid, test, *extra):
    return load_config(
        CONFIGS / "tiny.yaml",
        ["data.source=files", f"data.train_split={train}", f"data.valid_split={valid}",
         f"data.test_split={test}", *extra],
    )  # fmt: skip


def ids_as_tokens(corpus, name, side, i):
    vocab = corpus.src_vocab if side == "src" else corpus.tgt_vocab
    return vocab.decode(getattr(corpus.splits[name], side)[i].tolist())


@pytest.mark.parametrize(
    "train_file", ["train.tsv", "train.csv.gz", "train.jsonl", "train.json", "train.parquet"]
)
def test_every_table_format_gives_the_same_corpus_as_text_files(tmp_path, train_file):
    write_text(tmp_path / "ref.en", [p[0] for p in PAIRS])
    write_text(tmp_path / "ref.de", [p[1] for p in PAIRS], compress=False)
    write_table(tmp_path / "dev.jsonl", PAIRS[:20])
    write_table(tmp_path / train_file, PAIRS)
    reference = prepare(
        files_config(tmp_path / "ref", tmp_path / "dev.jsonl", tmp_path / "dev.jsonl")
    )
    corpus = prepare(
        files_config(tmp_path / train_file, tmp_path / "dev.jsonl", tmp_path / "dev.jsonl")
    )
    assert corpus.src_vocab == reference.src_vocab and corpus.tgt_vocab == reference.tgt_vocab
    for side in ("src", "tgt"):
        train, ref = (
            getattr(corpus.splits[corpus_train(corpus)], side),
            getattr(reference.splits[corpus_train(reference)], side),
        )
        assert np.array_equal(train.ids, ref.ids) and np.array_equal(train.offsets, ref.offsets)
    (tokens,) = Tokenizer("de").tokenize([PAIRS[7][1]])
    assert ids_as_tokens(corpus, corpus_train(corpus), "tgt", 7) == tokens


def corpus_train(corpus):
    return next(name for name, info in corpus.stats["splits"].items() if info["file"] == "train")


def test_a_translation_column_and_named_columns(tmp_path):
    rows = [{"translation": {"en": en, "de": de}, "id": i} for i, (en, de) in enumerate(PAIRS)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_table(tmp_path / "dev.tsv", PAIRS[:10], columns=("source", "target"))
    # data.columns names the table columns; the translation column is found by itself
    cfg = files_config(tmp_path / "train.jsonl", tmp_path / "dev.tsv", tmp_path / "dev.tsv")
    with pytest.raises(Exception, match=r"dev\.tsv has no column 'en' \(it has: source, target\)"):
        prepare(cfg)
    write_table(tmp_path / "dev.tsv", PAIRS[:10])
    corpus = prepare(cfg)
    assert len(corpus.splits[cfg.data.train_split]) == len(PAIRS)


def test_text_that_needs_cleaning_is_cleaned_counted_and_filtered(tmp_path):
    en = ["\ufeffA dog runs.", "Cafe\u0301 au lait.", "  Two   men\r", "", "A dog runs.", "x " * 80]
    de = ["Ein Hund läuft.", "Milchkaffee.", "Zwei Männer", "Leer.", "Ein Hund läuft.", "y"]
    write_text(tmp_path / "train.en", en)
    write_text(tmp_path / "train.de", de)
    write_table(tmp_path / "dev.tsv", [("A dog runs.", "Ein Hund läuft."), ("New.", "Neu.")])
    extra = ["data.dedup=true", "data.max_len=50", "data.max_ratio=4", "vocab.min_freq=1"]
    cfg = files_config(tmp_path / "train", tmp_path / "dev.tsv", tmp_path / "dev.tsv", *extra)
    corpus = prepare(cfg)
    stats = corpus.stats
    assert stats["train_dropped"] == {"empty": 1, "duplicates": 1, "too_long": 1, "ratio": 0}
    train = stats["splits"][cfg.data.train_split]
    assert (train["read"], train["pairs"], train["bom"], train["nfc"]) == (6, 3, 1, 1)
    assert train["whitespace"] == 1  # "  Two   men\r"
    assert ids_as_tokens(corpus, cfg.data.train_split, "src", 1)[0] == "Café"  # composed
    dev = stats["splits"][cfg.data.valid_split]
    assert (dev["overlap_pairs"], dev["overlap_sources"]) == (1, 1)
    src, _ = read_texts(cfg, "valid")
    assert src == ["A dog runs.", "New."]


def test_a_hub_dataset_saved_to_disk_loads_offline(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = lambda pairs: {"translation": [{"de": de, "en": en} for en, de in pairs]}  # noqa: E731
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows(PAIRS)),
            "validation": datasets.Dataset.from_dict(rows(PAIRS[:12])),
            "test": datasets.Dataset.from_dict(rows(PAIRS[12:20])),
        }
    ).save_to_disk(tmp_path / "wmt-like")
    cfg = load_config(
        CONFIGS / "tiny.yaml", ["data.source=hub", f"data.hub={tmp_path / 'wmt-like'}"]
    )
    corpus = prepare(cfg)
    assert [len(corpus.splits[n]) for n in ("train", "validation", "test")] == [300, 12, 8]
    assert prepare(cfg).cached
    assert read_texts(cfg, "test")[1][0] == PAIRS[12][1]


def test_a_hub_dataset_neither_online_nor_cached_is_one_line(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    # What HF_HUB_OFFLINE=1 sets when the libraries are imported (no network here either way,
    # but offline fails at once instead of after five retries).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    result = invoke("prepare", "--set", "data.source=hub", "--set", "data.hub=wmt14",
                    "--set", "data.hub_config=de-en")  # fmt: skip
    assert_one_line_error(result, 1, "the Hub cannot be reached and the dataset is not in the")
    result = invoke("prepare", "--set", "data.source=hub", "--set", "data.hub=bad name!")
    assert_one_line_error(result, 2, "data.hub bad name!: not a Hub dataset name")


def test_german_to_english_and_cache_reuse(tmp_path):
    write_table(tmp_path / "train.tsv", PAIRS)
    write_table(tmp_path / "dev.tsv", PAIRS[:10])
    cfg = files_config(tmp_path / "train.tsv", tmp_path / "dev.tsv", tmp_path / "dev.tsv",
                       "data.src_lang=de", "data.tgt_lang=en")  # fmt: skip
    corpus = prepare(cfg)
    (tokens,) = Tokenizer("en").tokenize([PAIRS[3][0]])
    assert ids_as_tokens(corpus, cfg.data.train_split, "tgt", 3) == tokens
    again = prepare(cfg)
    assert again.cached and again.path == corpus.path
    (tmp_path / "train.tsv").write_text((tmp_path / "train.tsv").read_text() + "A b.\tC d.\n")
    assert not prepare(cfg).cached  # a changed file is a new cache


@pytest.mark.parametrize(
    "setup, code, text",
    [
        ("misaligned", 1, "train.en has 300 lines but {tmp}/train.de has 299"),
        ("missing", 2, "no such file: {tmp}/nothing"),
        ("extension", 2, "unknown file type '.xlsx'"),
        ("folder", 2, "is a folder; name a table file or a prefix"),
        ("columns", 2, "has no column 'en' (it has: a, b)"),
        ("utf8", 1, "train.de: line 3 is not valid UTF-8"),
        ("empty", 1, "has no pairs left after cleaning (2 with an empty side)"),
        ("too_long", 1, "has no pairs left after cleaning (300 over data.max_len)"),
        ("language", 2, "data.src_lang: spaCy has no tokenizer for language 'qq'"),
    ],
)
def test_bad_input_is_one_line_and_no_cache(tmp_path, fresh_cache, setup, code, text):
    write_text(tmp_path / "train.en", [p[0] for p in PAIRS])
    write_text(tmp_path / "train.de", [p[1] for p in PAIRS])
    write_table(tmp_path / "dev.tsv", PAIRS[:5])
    train, extra = tmp_path / "train", []
    if setup == "misaligned":
        write_text(tmp_path / "train.de", [p[1] for p in PAIRS[:-1]])
    elif setup == "missing":
        train = tmp_path / "nothing"
    elif setup == "extension":
        train = tmp_path / "train.xlsx"
        train.write_text("x")
    elif setup == "folder":
        train = tmp_path
    elif setup == "columns":
        train = tmp_path / "train.tsv"
        write_table(train, PAIRS, columns=("a", "b"))
    elif setup == "utf8":
        (tmp_path / "train.de").write_bytes(b"Eins.\nZwei.\nDrei \xe4.\n" + b"x.\n" * 297)
    elif setup == "empty":
        write_text(tmp_path / "train.en", ["", "A."])
        write_text(tmp_path / "train.de", ["Ein.", " "])
    elif setup == "too_long":
        extra = ["--set", "data.max_len=3"]
    elif setup == "language":
        extra = ["--set", "data.src_lang=qq"]
    dev = tmp_path / "dev.tsv"
    splits = [f"data.train_split={train}", f"data.valid_split={dev}", f"data.test_split={dev}"]
    sets = [x for s in ["data.source=files", *splits] for x in ("--set", s)]
    result = invoke("prepare", "-c", CONFIGS / "tiny.yaml", *sets, *extra)
    assert_one_line_error(result, code, text.format(tmp=tmp_path))
    cache = fresh_cache
    assert not cache.exists() or not any(cache.glob("*/meta.json"))  # nothing half-written
    assert not cache.exists() or not [p for p in cache.iterdir() if p.name.startswith(".")]


def corpus_fingerprint(corpus) -> str:
    digest = hashlib.sha256()
    for pairs in corpus.splits.values():
        for array in (pairs.src.ids, pairs.src.offsets, pairs.tgt.ids, pairs.tgt.offsets):
            digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\n".join(corpus.src_vocab.itos).encode())
    digest.update("\n".join(corpus.tgt_vocab.itos).encode())
    return digest.hexdigest()


@requires_real_data
def test_multi30k_ids_are_unchanged_by_the_datasets_reader():
    # Measured with the loader this reader replaced (commit e69c5a9), configs/seed.yaml: words.
    cfg = load_config(CONFIGS / "seed.yaml", [f"data.dir={REAL_DATA}"])
    expected = "5eac64d553e800bd91429b2b009577d283a852fe2b9b195e618633f9aca74e42"
    assert corpus_fingerprint(prepare(cfg)) == expected


@requires_real_data
def test_multi30k_bpe_ids_are_the_reference_pipelines():
    """The default config's ids are what tokenizing, segmenting and looking up each line gives.
    (Not a fixed digest: `tokenizers` breaks ties between equally frequent merges differently
    from one process to the next, so no two cold BPE prepares need agree.)"""
    cfg = load_config(CONFIGS / "multi30k.yaml", [f"data.dir={REAL_DATA}"])
    corpus = prepare(cfg)
    src, tgt = read_texts(cfg, "train")
    for side, lines, lang in (("src", src, "en"), ("tgt", tgt, "de")):
        pieces = corpus.subword.segment(Tokenizer(lang).tokenize(lines))
        vocab = corpus.src_vocab if side == "src" else corpus.tgt_vocab
        expected = [i for p in pieces for i in vocab.encode(p)]
        assert getattr(corpus.splits["train"], side).ids.tolist() == expected


def test_train_translate_and_evaluate_german_to_english_from_files(tmp_path):
    write_table(tmp_path / "train.parquet", PAIRS)
    write_text(tmp_path / "dev.de", [p[1] for p in PAIRS[:12]], compress=True)
    write_text(tmp_path / "dev.en", [p[0] for p in PAIRS[:12]], compress=True)
    write_table(tmp_path / "test.jsonl", toy_pairs(15, seed=9))
    splits = {"train_split": "train.parquet", "valid_split": "dev", "test_split": "test.jsonl"}
    settings = ["data.source=files", "data.src_lang=de", "data.tgt_lang=en", "train.max_steps=60"]
    settings += [f"data.{key}={tmp_path / name}" for key, name in splits.items()]
    sets = [x for s in settings for x in ("--set", s)]
    result = invoke("train", "-c", CONFIGS / "tiny.yaml", "--no-progress", *sets)
    assert result.exit_code == 0, result.output

    result = invoke("translate", "Ein Hund läuft im Park.")
    assert result.exit_code == 0 and result.stdout.strip(), result.output
    result = invoke("evaluate", "--bleu", "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["n"] == 15 and scores["split"] == str(tmp_path / "test.jsonl")
    assert_one_line_error(invoke("evaluate", "--split", tmp_path / "nope"), 2, "no such file")


def test_tables_with_trailing_tabs_empty_splits_and_odd_columns(tmp_path):
    write_text(tmp_path / "train.en", [p[0] for p in PAIRS])
    write_text(tmp_path / "train.de", [p[1] for p in PAIRS])
    # A trailing tab on every row must not shift the columns.
    rows = "".join(f"{en}\t{de}\t\n" for en, de in PAIRS[:5])
    (tmp_path / "dev.tsv").write_text("en\tde\n" + rows)
    (tmp_path / "empty.en").write_text("")
    (tmp_path / "empty.de").write_text("")
    cfg = files_config(tmp_path / "train", tmp_path / "dev.tsv", tmp_path / "empty")
    corpus = prepare(cfg)
    assert read_texts(cfg, "valid") == ([p[0] for p in PAIRS[:5]], [p[1] for p in PAIRS[:5]])
    assert corpus.stats["splits"][str(tmp_path / "empty")]["pairs"] == 0  # empty, not an error

    (tmp_path / "lists.jsonl").write_text('{"en": ["a"], "de": "b"}\n')
    dev = f"data.valid_split={tmp_path / 'lists.jsonl'}"
    sets = ["data.source=files", f"data.train_split={tmp_path / 'train'}", dev,
            f"data.test_split={tmp_path / 'dev.tsv'}"]  # fmt: skip
    result = invoke(
        "prepare", "-c", CONFIGS / "tiny.yaml", *[x for s in sets for x in ("--set", s)]
    )
    assert_one_line_error(result, 2, "column 'en' is not text")


def test_a_hub_folder_of_one_dataset_is_refused(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"en": ["A."], "de": ["Ein."]}).save_to_disk(tmp_path / "one")
    result = invoke("prepare", "--set", "data.source=hub", "--set", f"data.hub={tmp_path / 'one'}")
    assert_one_line_error(result, 2, "holds one dataset, not splits: save a DatasetDict")
