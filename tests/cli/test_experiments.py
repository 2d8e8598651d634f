"""`translator runs` and `translator compare` on tiny runs: statuses as they really happen,
figures equal to sacreBLEU's own command line, the seed-group mode, and one clear line for each
bad request."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import (
    assert_one_line_error,
    invoke,
    tiny,
    toy_pairs,
    train_command,
    write_toy_corpus,
)

from translator import run_dir as rd
from translator.training.trainer import Trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four tiny runs on one toy corpus: a1, a2 (seeds of one recipe) and b1, b2 (another)."""
    root = tmp_path_factory.mktemp("experiments")
    data = write_toy_corpus(root / "toy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSLATOR_CACHE_DIR", str(root / "cache"))
        for name, steps, seed in (("a1", 20, 1), ("a2", 20, 2), ("b1", 60, 1), ("b2", 60, 2)):
            cfg = tiny(data, f"train.max_steps={steps}", f"train.seed={seed}",
                       "train.max_epochs=100", "train.tensorboard=false")  # fmt: skip
            Trainer(cfg, root / "runs" / name, progress=False).train()
    return root / "runs"


def compare_json(*args):
    result = invoke("compare", *map(str, args), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_compare_figures_equal_the_sacrebleu_command_line(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(runs.parent / "cache"))
    report = compare_json(runs / "a1", runs / "b1")
    # The outputs compare decoded are recorded in each run dir: score those files with sacreBLEU.
    files = []
    for run in ("a1", "b1"):
        (record,) = [r for r in rd.evaluation_records(runs / run) if r["split"] == report["split"]]
        files.append(runs / run / rd.EVALUATIONS / f"{record['key']}.txt")
    refs = tmp_path / "ref.de"
    refs.write_text("".join(de + "\n" for _, de in toy_pairs(40, seed=3)), encoding="utf-8")
    cli = [
        sys.executable,
        "-m",
        "sacrebleu",
        str(refs),
        "-i",
        *map(str, files),
        "-m",
        "bleu",
        "chrf",
    ]
    env = {**os.environ, "SACREBLEU_SEED": "12345"}
    ar = json.loads(subprocess.run([*cli, "--paired-ar"], capture_output=True, text=True,
                                   env=env, check=True).stdout)  # fmt: skip
    bs = subprocess.run([*cli, "--paired-bs", "-f", "text"], capture_output=True, text=True,
                        env=env, check=True).stdout  # fmt: skip
    base, system = report["systems"]
    assert base["bleu"] == round(ar[0]["BLEU"]["score"], 2)
    assert system["bleu"] == round(ar[1]["BLEU"]["score"], 2)
    assert base["chrf"] == round(ar[0]["chrF2"]["score"], 2)
    assert system["chrf"] == round(ar[1]["chrF2"]["score"], 2)
    assert system["bleu_p_ar"] == round(ar[1]["BLEU"]["p_value"], 4)
    assert system["chrf_p_ar"] == round(ar[1]["chrF2"]["p_value"], 4)
    p_bootstrap = [float(p) for p in re.findall(r"\(p = ([0-9.]+)\)", bs)]
    assert [system["bleu_p_bootstrap"], system["chrf_p_bootstrap"]] == p_bootstrap
    assert report["length_buckets"] and report["frequency_buckets"] and report["examples"]
    assert "train.max_steps" in report["config_diff"]


def test_compare_reuses_recorded_outputs_and_writes_an_html_report(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(runs.parent / "cache"))
    compare_json(runs / "a2", runs / "b2")  # decodes and records
    before = {p: p.stat().st_mtime_ns for p in (runs / "a2" / rd.EVALUATIONS).glob("*.txt")}
    page = tmp_path / "report.html"
    result = invoke("compare", runs / "a2", runs / "b2", "--html", page)
    assert result.exit_code == 0, result.output
    assert f"decoding {runs / 'a2'}" not in result.output  # read from the run dir, not decoded
    assert before == {p: p.stat().st_mtime_ns for p in (runs / "a2" / rd.EVALUATIONS).glob("*.txt")}
    html = page.read_text(encoding="utf-8")
    assert (
        "<svg" in html and "BLEU by source length" in html and "http" not in html.split("<svg")[0]
    )


def test_groups_of_seeds_give_mean_sd_and_a_test(runs, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(runs.parent / "cache"))
    report = compare_json("--a", runs / "a1", runs / "a2", "--b", runs / "b1", runs / "b2")
    a, b = report["groups"]["a"], report["groups"]["b"]
    bleus = [a["runs"][str(runs / n)]["bleu"] for n in ("a1", "a2")]
    assert a["bleu"]["mean"] == pytest.approx(sum(bleus) / 2, abs=0.01)
    assert a["bleu"]["sd"] == pytest.approx(abs(bleus[0] - bleus[1]) / 2**0.5, abs=0.01)
    test = report["tests"]["bleu"]
    assert test["difference"] == pytest.approx(b["bleu"]["mean"] - a["bleu"]["mean"], abs=0.011)
    assert 0 < test["p_bootstrap"] <= 1 and test["ci95"][0] <= test["ci95"][1]


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["{runs}/a1", "{runs}/nothing"], 1, "does not exist"),
        (["{runs}/a1", "{runs}"], 1, "is not a run dir"),
        (["{runs}/a1"], 2, "at least two runs"),
        (["--a", "{runs}/a1", "--b", "{runs}/b1", "{runs}/b2"], 2, "--a needs at least two runs"),
        (
            ["{runs}/a1", "{runs}/b1", "--src", "{runs}/a1/config.yaml"],
            2,
            "--src and --ref go together",
        ),
        (["{runs}/a1", "{runs}/b1", "--split", "nosuchsplit"], 1, "no split 'nosuchsplit'"),
    ],
)
def test_bad_compare_requests_get_one_line_and_write_nothing(runs, args, code, text, tmp_path):
    before = sorted(p for p in runs.rglob("*") if p.is_file())
    page = tmp_path / "report.html"
    result = invoke("compare", *(a.format(runs=runs) for a in args), "--html", page)
    assert_one_line_error(result, code, text)
    assert not page.exists() and sorted(p for p in runs.rglob("*") if p.is_file()) == before


def test_runs_of_another_target_language_are_refused(runs, tmp_path):
    other = tmp_path / "fr"
    other.mkdir()
    for name in (rd.CONFIG, rd.BEST, rd.SRC_VOCAB, rd.TGT_VOCAB):
        text = (runs / "a1" / name).read_bytes()
        (other / name).write_bytes(text.replace(b"tgt_lang: de", b"tgt_lang: fr"))
    result = invoke("compare", runs / "a1", other)
    assert_one_line_error(result, 2, "translates into 'fr'")


def test_runs_lists_every_run_with_its_status(runs, toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the table as a wide terminal shows it
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in ("a1", "b1"):
        subprocess.run(["cp", "-r", str(runs / name), str(folder / name)], check=True)
    # A run still training, and one killed with SIGKILL (its process is gone).
    live = subprocess.Popen(train_command(toy_data, folder / "live", "train.max_steps=100000",
                                          "train.max_epochs=100000"))  # fmt: skip
    killed = subprocess.Popen(train_command(toy_data, folder / "killed", "train.max_steps=100000",
                                            "train.max_epochs=100000"))  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not all(
            rd.read_status(folder / n).get("status") == "training" for n in ("live", "killed")
        ):
            time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        result = invoke("runs", folder, "--json")
        assert result.exit_code == 0, result.output
        rows = {r["name"]: r for r in json.loads(result.stdout)}
        assert rows["live"]["status"] == "training"
        assert rows["killed"]["status"] == "incomplete"
        assert rows["a1"]["status"] == rows["b1"]["status"] == "complete"
        assert rows["a1"]["config"] == "tiny" and "train.max_steps=20" in rows["a1"]["changes"]
        assert rows["b1"]["steps"] == 60 and rows["b1"]["parameters"] > 0
        assert rows["b1"]["test_bleu"] is not None  # recorded by the compare tests above
        ordered = json.loads(invoke("runs", folder, "--sort", "val_bleu", "--json").stdout)
        scores = [r["val_bleu"] for r in ordered if r["val_bleu"] is not None]
        assert scores == sorted(scores, reverse=True)
        table = invoke("runs", folder)
        assert table.exit_code == 0 and "training" in table.stdout and "incomplete" in table.stdout
    finally:
        live.kill()
        live.wait()


def test_runs_rejects_an_unknown_sort_key(runs):
    assert_one_line_error(invoke("runs", runs, "--sort", "colour"), 1, "choose one of")


def test_evaluate_records_what_it_scored_and_reuses_it(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(runs.parent / "cache"))
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(runs / "a1"), str(run)], check=True)
    shutil.rmtree(run / rd.EVALUATIONS, ignore_errors=True)  # what compare recorded there
    first = invoke("evaluate", "--run", run, "--json", "--beam", "2")
    assert first.exit_code == 0, first.output
    scored = json.loads(first.stdout.strip().splitlines()[-1])
    assert scored["reused"] is False
    (record,) = rd.evaluation_records(run)
    assert record["bleu"] == scored["bleu"] and record["decode"]["beam_size"] == 2
    assert record["signature"].startswith("nrefs:1") and record["n"] == 40
    outputs = run / rd.EVALUATIONS / f"{record['key']}.txt"
    assert len(outputs.read_text(encoding="utf-8").splitlines()) == 40

    again = json.loads(invoke("evaluate", "--run", run, "--json", "--beam", "2").stdout)
    assert again["reused"] is True and again["bleu"] == scored["bleu"]
    fresh = json.loads(
        invoke("evaluate", "--run", run, "--json", "--beam", "2", "--no-cache").stdout
    )
    assert fresh["reused"] is False and fresh["bleu"] == scored["bleu"]
    other = json.loads(invoke("evaluate", "--run", run, "--json", "--beam", "1").stdout)
    assert other["reused"] is False  # other decoding options: other outputs
    assert len(rd.evaluation_records(run)) == 2

    # A search whose outputs changed (its version bumped) never reuses an older one's outputs.
    from translator.decoding import search

    version = search.OUTPUTS_VERSION
    monkeypatch.setattr(search, "OUTPUTS_VERSION", version + 1)
    newer = json.loads(invoke("evaluate", "--run", run, "--json", "--beam", "2").stdout)
    assert newer["reused"] is False
    monkeypatch.setattr(search, "OUTPUTS_VERSION", version)

    # New weights (e.g. `translator average` into the best file) never reuse the old outputs.
    (run / rd.BEST).write_bytes((runs / "b1" / rd.BEST).read_bytes())
    changed = json.loads(invoke("evaluate", "--run", run, "--json", "--beam", "2").stdout)
    assert changed["reused"] is False
