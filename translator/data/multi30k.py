"""Find, download and verify the Multi30k task-1 raw files; read parallel sentences.

    files = locate_split("test2016", ["en", "de"], data_dir=None)   # paths, downloaded if missing
    src, tgt = read_parallel("val", "en", "de", data_dir=None)      # two lists of str, same length

Files are looked for in `data.dir` (config), else `$TRANSLATOR_DATA_DIR`, else the user cache
(`$XDG_CACHE_HOME/translator/multi30k`). A missing file is downloaded from the official repository
into a temp file that is renamed only once its sha256 matches the pinned one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import urllib.request
import zlib
from pathlib import Path

from translator.errors import UserError
from translator.files import atomic_write

URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}"

# Official file stems, and the short names users may type instead.
SPLITS = (
    "train",
    "val",
    "test_2016_flickr",
    "test_2017_flickr",
    "test_2017_mscoco",
    "test_2018_flickr",
)
ALIASES = {
    "valid": "val",
    "dev": "val",
    "test": "test_2016_flickr",
    "test2016": "test_2016_flickr",
    "test2017": "test_2017_flickr",
    "mscoco": "test_2017_mscoco",
    "test2018": "test_2018_flickr",
}

SHA256 = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
}


class DataError(UserError, RuntimeError):
    """Data that cannot be used: missing, corrupt, or misaligned files."""


def canonical_split(name: str) -> str:
    """'test2016' -> 'test_2016_flickr'; official names pass through."""
    split = ALIASES.get(name, name)
    if split not in SPLITS:
        known = ", ".join(list(SPLITS) + sorted(ALIASES))
        raise DataError(f"unknown split {name!r} (known: {known})")
    return split


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "translator"


def data_dir(configured: str | None) -> Path:
    """Where the raw files live: config, then environment, then the user cache."""
    chosen = configured or os.environ.get("TRANSLATOR_DATA_DIR")
    return Path(chosen).expanduser() if chosen else user_cache_dir() / "multi30k"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_split(
    split: str, langs: list[str], data_dir_setting: str | None = None, verify: bool = True
) -> list[Path]:
    """Return the verified `.gz` path of `split` for each language, downloading what is missing."""
    return locate_splits([split], langs, data_dir_setting, verify)[split]


def locate_splits(
    splits: list[str], langs: list[str], data_dir_setting: str | None = None, verify: bool = True
) -> dict[str, list[Path]]:
    """The verified `.gz` paths of several splits, downloading what is missing. When a download
    fails, one error lists every file still missing, so that a user offline fetches them all at
    once instead of learning of one per try."""
    folder = data_dir(data_dir_setting)
    wanted = {
        split: [folder / f"{canonical_split(split)}.{lang}.gz" for lang in langs]
        for split in splits
    }
    missing = list(dict.fromkeys(p for paths in wanted.values() for p in paths if not p.exists()))
    for i, path in enumerate(missing):
        try:
            _download(path)
        except OSError as err:  # URLError, timeouts and unwritable folders are all OSErrors
            names = ", ".join(p.name for p in missing[i:])
            raise DataError(
                f"Multi30k files missing from {folder}: {names} (download failed: "
                f"{getattr(err, 'reason', err)}). Download each from {URL.format(name='<file>')} "
                "into that folder, or set TRANSLATOR_DATA_DIR (or data.dir) to a folder that has "
                "them"
            ) from None
    if verify:
        for path in dict.fromkeys(p for paths in wanted.values() for p in paths):
            if path not in missing:  # a download was checked as it came in
                _verify(path)
    return wanted


def _verify(path: Path) -> None:
    expected = SHA256.get(path.name)
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or not the official file (sha256 {actual[:12]}..., "
            f"expected {expected[:12]}...); delete it to download it again"
        )


def _download(path: Path) -> None:
    """Download the official file into `path`; OSError if it cannot be had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(URL.format(name=path.name), timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        _save_stream(response, path, total)


def _save_stream(stream, path: Path, total: int | None) -> None:
    """Copy `stream` into `path` atomically, and only if its sha256 is the pinned one."""
    from tqdm import tqdm

    def download(tmp: str) -> None:
        digest = hashlib.sha256()
        with (
            open(tmp, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"download {path.name}",
                leave=False,
                disable=not sys.stderr.isatty(),
            ) as bar,
        ):
            for block in iter(lambda: stream.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        expected = SHA256.get(path.name)
        if expected and digest.hexdigest() != expected:
            raise DataError(f"downloaded {path.name} has the wrong sha256; it was not saved")

    atomic_write(path, download)


def read_lines(path: Path) -> list[str]:
    """Read a gzip (or plain) UTF-8 text file into lines without their newline."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(
            f"{path} is not a complete gzip file ({err}); delete it and fetch it again"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    # split("\n"), not splitlines(): the latter also breaks at U+2028 and friends inside a line.
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_parallel(
    split: str,
    src_lang: str,
    tgt_lang: str,
    data_dir_setting: str | None = None,
    verify: bool = True,
) -> tuple[list[str], list[str]]:
    """The source and target sentences of a split, checked to have the same number of lines."""
    src_path, tgt_path = locate_split(split, [src_lang, tgt_lang], data_dir_setting, verify)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be aligned"
        )
    return src, tgt
