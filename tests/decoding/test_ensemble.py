"""Tests for translator.ensemble: several models searched as one."""

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import CONFIGS, TOY_BPE, toy_overrides
from test_search import EOS, SOS, TINY, VOCAB, greedy_search, random_model, random_src

from translator.config import DecodeConfig, load_config
from translator.decoding.ensemble import Ensemble
from translator.decoding.search import beam_search, length_penalty
from translator.decoding.translator import Translator
from translator.model.transformer import Transformer
from translator.run_dir import RunError
from translator.training.trainer import Trainer

LENGTHS = [9, 4, 7, 1, 12, 5]


def test_a_model_ensembled_with_itself_decodes_as_the_model_alone():
    model, src = random_model(), random_src(LENGTHS)
    twice = Ensemble([model, model])
    assert greedy_search(twice, src, DecodeConfig(), sos_id=SOS, eos_id=EOS) == greedy_search(
        model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS
    )
    alone = beam_search(
        model, src, DecodeConfig(beam_size=4, length_penalty=1.0), sos_id=SOS, eos_id=EOS
    )
    both = beam_search(
        twice, src, DecodeConfig(beam_size=4, length_penalty=1.0), sos_id=SOS, eos_id=EOS
    )
    assert [hyps[0][0] for hyps in both] == [hyps[0][0] for hyps in alone]
    assert [hyps[0][1] for hyps in both] == pytest.approx([hyps[0][1] for hyps in alone], abs=1e-4)


def ensemble_score(models, src_row, ids, alpha):
    """Sum over ids + [EOS] of log(mean_i p_i(y_t)), over the GNMT length penalty."""
    tgt = torch.tensor([[SOS, *ids, EOS]])
    src_row = src_row[src_row != 0].unsqueeze(0)
    with torch.no_grad():
        probs = torch.stack([m(src_row, tgt[:, :-1]).softmax(-1)[0] for m in models]).mean(0)
    probs[:, [0, SOS]] = 0  # never outputs (<pad>, <sos>): the search renormalizes without them
    probs /= probs.sum(-1, keepdim=True)
    total = probs.gather(1, tgt[0, 1:].unsqueeze(1)).log().sum().item()
    return total / length_penalty(len(ids) + 1, alpha)


def test_beam_search_scores_the_average_of_the_members_probabilities():
    # Members of different widths: each reads its own slice of the joint encoder output.
    narrow = random_model()
    torch.manual_seed(1)
    wide = random_model(d_model=48, d_ff=96)
    with torch.no_grad():  # a different model, not a seed-0 twin
        for p in wide.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ensemble, src = Ensemble([narrow, wide]), random_src(LENGTHS, seed=3)
    beams = beam_search(
        ensemble,
        src,
        DecodeConfig(beam_size=4, length_penalty=0.6, nbest=2),
        sos_id=SOS,
        eos_id=EOS,
    )
    for row, hyps in enumerate(beams):
        for ids, score in hyps:
            expected = ensemble_score([narrow, wide], src[row], ids, 0.6)
            assert score == pytest.approx(expected, abs=1e-4)
    # The ensemble is a model of its own: its output is neither member's on every sentence.
    alone = [greedy_search(m, src, DecodeConfig(), sos_id=SOS, eos_id=EOS) for m in (narrow, wide)]
    together = greedy_search(ensemble, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)
    assert together != alone[0] and together != alone[1]


def test_the_step_distribution_is_normalised():
    ensemble, src = Ensemble([random_model(), random_model(d_model=48)]), random_src([5, 3])
    memory, mask = ensemble.encode(src)
    out = ensemble.decode(torch.full((2, 1), SOS), memory, mask, ensemble.new_cache())
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 1), atol=1e-5)
    assert not math.isnan(out.sum().item())


def test_outputs_fit_the_member_with_the_fewest_positions():
    short = Transformer(replace(TINY, max_positions=12), VOCAB, VOCAB, pad_id=0).eval()
    ensemble, src = Ensemble([random_model(), short]), random_src([8, 3])
    assert ensemble.max_positions == 12
    hyps = greedy_search(ensemble, src, DecodeConfig(max_len=50), sos_id=SOS, eos_id=EOS)
    assert all(len(h) <= 11 for h in hyps)  # position 0 is SOS


def test_members_with_different_vocabularies_are_refused():
    with pytest.raises(ValueError, match="share their vocabularies"):
        Ensemble([random_model(), Transformer(TINY, VOCAB + 5, VOCAB + 5, pad_id=0)])


def test_a_source_too_long_for_one_member_is_cut_with_a_warning_not_an_error(caplog):
    from translator.config import Config
    from translator.data.vocab import SPECIALS, Vocab
    from translator.decoding.translator import Translator

    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(VOCAB - len(SPECIALS)))])
    short = Transformer(replace(TINY, max_positions=12), VOCAB, VOCAB, pad_id=0).eval()
    translator = Translator(Ensemble([random_model(), short]), Config(), vocab, vocab)
    (out,) = translator.translate([" ".join(f"w{i % 16}" for i in range(30))], beam_size=2)
    assert isinstance(out, str) and "longer than 11 tokens were cut" in caplog.text


def test_runs_with_the_same_vocabularies_but_another_bpe_are_refused(toy_data, tmp_path):
    """Same ids, other segmentation: the members would read different pieces of each word."""
    cfg = load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data, "train.max_steps=2", *TOY_BPE))
    run = Trainer(cfg, run_dir=tmp_path / "a", progress=False).train()
    other = tmp_path / "b"
    shutil.copytree(run, other)
    bpe = json.loads((other / "subword.json").read_text(encoding="utf-8"))
    bpe["model"]["merges"] = bpe["model"]["merges"][:-1]  # one merge fewer, same vocabularies
    (other / "subword.json").write_text(json.dumps(bpe), encoding="utf-8")
    Translator.load(run, ensemble=[run])  # the same run twice is fine
    with pytest.raises(RunError, match="different BPE"):
        Translator.load(run, ensemble=[other])
