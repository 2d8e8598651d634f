import gzip
import io
import urllib.error
from pathlib import Path

import pytest
from conftest import REAL_DATA, requires_real_data

from translator.data import multi30k as data
from translator.data.multi30k import DataError, canonical_split, locate_split, read_parallel


def test_short_split_names_are_accepted():
    assert canonical_split("test2016") == "test_2016_flickr"
    assert canonical_split("mscoco") == "test_2017_mscoco"
    assert canonical_split("test_2018_flickr") == "test_2018_flickr"
    with pytest.raises(DataError, match="unknown split 'test2019'"):
        canonical_split("test2019")


def test_files_are_found_in_the_environment_folder(toy_data, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_DATA_DIR", str(toy_data))
    src, tgt = read_parallel("val", "en", "de", verify=False)
    assert len(src) == len(tgt) == 40
    assert src[0].endswith(".") and tgt[0].endswith(".")


def test_config_folder_wins_over_the_environment(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_DATA_DIR", str(tmp_path / "elsewhere"))
    assert locate_split("val", ["en"], str(toy_data), verify=False) == [toy_data / "val.en.gz"]


def test_a_file_with_the_wrong_checksum_is_rejected(toy_data):
    # toy train.en.gz is not the official file: with verification on it must not be used
    with pytest.raises(DataError, match=r"train\.en\.gz is corrupt or not the official file"):
        locate_split("train", ["en"], str(toy_data), verify=True)


def test_a_truncated_gzip_names_the_file(toy_data):
    path = toy_data / "val.de.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"val\.de\.gz is not a complete gzip file"):
        read_parallel("val", "en", "de", str(toy_data), verify=False)


def test_misaligned_files_are_rejected(toy_data):
    with gzip.open(toy_data / "val.de.gz", "at", encoding="utf-8") as f:
        f.write("Eine Zeile zu viel.\n")
    with pytest.raises(DataError, match=r"val\.en\.gz has 40 lines but .*val\.de\.gz has 41"):
        read_parallel("val", "en", "de", str(toy_data), verify=False)


def test_invalid_utf8_is_reported(tmp_path):
    with gzip.open(tmp_path / "val.en.gz", "wb") as f:
        f.write(b"caf\xe9\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        data.read_lines(tmp_path / "val.en.gz")


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": None}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_saves_the_file_only_when_its_checksum_matches(tmp_path, monkeypatch):
    good = gzip.compress(b"A dog.\n")
    monkeypatch.setitem(data.SHA256, "val.en.gz", data.hashlib.sha256(good).hexdigest())
    urls = []
    monkeypatch.setattr(
        data.urllib.request, "urlopen", lambda url, timeout: urls.append(url) or FakeResponse(good)
    )
    (path,) = locate_split("val", ["en"], str(tmp_path))
    assert path.read_bytes() == good
    assert urls == ["https://github.com/multi30k/dataset/raw/master/data/task1/raw/val.en.gz"]

    monkeypatch.setattr(
        data.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"tampered")
    )
    with pytest.raises(DataError, match="wrong sha256; it was not saved"):
        locate_split("val", ["de"], str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.en.gz"]  # no partial file left


def test_offline_with_no_files_says_where_to_put_them(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    write_split_file = tmp_path / "val.de.gz"
    write_split_file.write_bytes(gzip.compress(b"Ein Hund.\n"))  # present: not listed
    with pytest.raises(DataError) as err:
        data.locate_splits(["train", "val", "test2016"], ["en", "de"], str(tmp_path), False)
    message = str(err.value)
    # Every missing file in one message, with the folder and where to get them.
    assert f"Multi30k files missing from {tmp_path}: train.en.gz, train.de.gz, val.en.gz, " in (
        message
    )
    assert "test_2016_flickr.en.gz, test_2016_flickr.de.gz (download failed" in message
    assert "val.de.gz," not in message
    assert "TRANSLATOR_DATA_DIR" in message and "no route to host" in message
    assert "https://github.com/multi30k/dataset/raw/master/data/task1/raw/<file>" in message


@requires_real_data
def test_the_real_files_match_their_pinned_checksums():
    for split in ("train", "val", "test2016"):
        paths = locate_split(split, ["en", "de"], REAL_DATA, verify=True)
        assert all(p.parent == Path(REAL_DATA) for p in paths)
    src, tgt = read_parallel("train", "en", "de", REAL_DATA)
    assert len(src) == len(tgt) == 29000
