"""The package's shape: every module imports alone, and the stages import one way.

An import that works only because another module was imported first (an order-dependent cycle)
fails here, in a fresh interpreter per module. The one-way rules themselves are import-linter's
contracts in pyproject.toml, run by `make lint`; this test runs them too, so that `make test`
alone catches a back-import.
"""

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT

import translator


def all_modules() -> list[str]:
    found = [translator.__name__]
    for info in pkgutil.walk_packages(translator.__path__, prefix="translator."):
        found.append(info.name)
    return sorted(found)


def test_the_walk_finds_every_stage_and_module():
    modules = set(all_modules())
    for stage in ("data", "model", "training", "decoding", "serving", "cli"):
        assert f"translator.{stage}" in modules
    assert len(modules) == len(list((ROOT / "translator").rglob("*.py")))


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = [m for m in all_modules() if m != "translator.__main__"]  # __main__ runs the CLI

    def import_alone(module: str) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
        )
        return module, done.stderr.strip().splitlines()[-1] if done.returncode else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [f"{m}: {err}" for m, err in pool.map(import_alone, modules) if err]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize(
    "public", ["from translator import Translator", "from translator.translate import Translator"]
)
def test_the_public_api_stays_where_users_import_it(public):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{public}; assert callable(Translator.load); print(Translator.__module__)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "translator.decoding.translator"


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"  # import-linter, a dev dependency
    done = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout
