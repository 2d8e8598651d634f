"""scripts/compare_joeynmt.py's weight port: our tensors under JoeyNMT's names, each parameter
mapped exactly once, with JoeyNMT's shapes; its vocabulary order; and reading JoeyNMT's training
log (all checked without JoeyNMT installed)."""

import importlib.util
from dataclasses import replace

import pytest
import torch
from conftest import ROOT, TINY

from translator.data.vocab import SPECIALS, Vocab
from translator.model.transformer import Transformer

spec = importlib.util.spec_from_file_location(
    "compare_joeynmt", ROOT / "scripts/compare_joeynmt.py"
)
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

VOCAB = 20


def joey_shapes(d: int, d_ff: int, layers: int, vocab: int, pre_norm: bool) -> dict:
    """The state dict JoeyNMT 2.3's TransformerEncoder/Decoder would have (its module names)."""
    shapes = {
        "src_embed.lut.weight": (vocab, d),
        "trg_embed.lut.weight": (vocab, d),
        "decoder.output_layer.weight": (vocab, d),
        "encoder.pe.pe": (1, 5000, d),
        "decoder.pe.pe": (1, 5000, d),
    }

    def linear(name, rows, cols):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (rows, cols), (rows,)

    def norm(name):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (d,)

    def attention(name):
        for part in ("q_layer", "k_layer", "v_layer", "output_layer"):
            linear(f"{name}.{part}", d, d)

    def ffn(name):
        linear(f"{name}.pwff_layer.0", d_ff, d)
        linear(f"{name}.pwff_layer.3", d, d_ff)
        norm(f"{name}.layer_norm")

    for i in range(layers):
        attention(f"encoder.layers.{i}.src_src_att")
        norm(f"encoder.layers.{i}.layer_norm")
        ffn(f"encoder.layers.{i}.feed_forward")
        attention(f"decoder.layers.{i}.trg_trg_att")
        norm(f"decoder.layers.{i}.x_layer_norm")
        attention(f"decoder.layers.{i}.src_trg_att")
        norm(f"decoder.layers.{i}.dec_layer_norm")
        ffn(f"decoder.layers.{i}.feed_forward")
    if pre_norm:
        linear("encoder.layer_norm", d, 1)
        linear("decoder.layer_norm", d, 1)
    return {
        name: tuple(x for x in shape if x != 1 or len(shape) == 3) for name, shape in shapes.items()
    }


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_every_parameter_is_ported_once_under_joeynmts_names_and_shapes(norm):
    cfg = replace(TINY, norm=norm, share_all_embeddings=True)
    model = Transformer(cfg, VOCAB, VOCAB, pad_id=0)
    with torch.no_grad():  # every element of every parameter a different number
        start = 0
        for param in model.parameters():  # tied weights are one parameter, listed once
            param.copy_(torch.arange(start, start + param.numel()).view(param.shape))
            start += param.numel()
    identity = list(range(VOCAB))
    state = compare.joey_state(model, identity, identity)

    expected = joey_shapes(cfg.d_model, cfg.d_ff, cfg.encoder_layers, VOCAB, norm == "pre")
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    # Each of our numbers lands exactly once, except the one shared embedding matrix, which
    # JoeyNMT keeps three times (source and target embeddings, output layer).
    ported = torch.cat([t.flatten() for n, t in state.items() if not n.endswith("pe.pe")])
    counts = torch.bincount(ported.long(), minlength=start)
    embedding = model.src_embed.lut.weight
    in_embedding = torch.zeros(start, dtype=torch.bool)
    in_embedding[embedding.flatten().long()] = True
    assert (counts[in_embedding] == 3).all() and (counts[~in_embedding] == 1).all()


def test_vocabulary_orders_permute_the_embedding_rows():
    model = Transformer(replace(TINY, share_all_embeddings=True), VOCAB, VOCAB, pad_id=0)
    order = list(reversed(range(VOCAB)))  # JoeyNMT's id i is our id order[i]
    state = compare.joey_state(model, order, order)
    ours = model.src_embed.lut.weight
    for name in ("src_embed.lut.weight", "trg_embed.lut.weight", "decoder.output_layer.weight"):
        assert torch.equal(state[name], ours[order])


def test_joeynmt_ids_put_unk_pad_bos_eos_first():
    vocab = Vocab([*SPECIALS, "Ein", "Hund"])  # ours: <pad> <unk> <sos> <eos>
    order = compare.joey_order(vocab)
    assert [vocab.itos[i] for i in order] == ["<unk>", "<pad>", "<sos>", "<eos>", "Ein", "Hund"]
    specials = compare.joey_specials(*(vocab.itos[i] for i in order[:4]))
    assert specials["unk_token"] == "<unk>" and specials["pad_id"] == 1
    assert specials["bos_token"] == "<sos>" and specials["eos_id"] == 3


JOEY_LOG = """\
2026-11-30 18:45:35,054 - INFO - joeynmt.model - Total params: 2558976
2026-11-30 18:45:44,915 - INFO - joeynmt.training - Epoch   1, Step:        5, Batch Loss:     7.713571, Batch Acc: 0.050380, Tokens per Sec:      972, Lr: 0.000013
2026-11-30 18:45:55,762 - INFO - joeynmt.training - Epoch   1, Step:       10, Batch Loss:     7.689569, Batch Acc: 0.063285, Tokens per Sec:      932, Lr: 0.000025
2026-11-30 18:46:04,262 - INFO - joeynmt.training - Epoch   1, Step:       15, Batch Loss:     7.630392, Batch Acc: 0.061390, Tokens per Sec:     1027, Lr: 0.000037
"""  # noqa: E501  (JoeyNMT 2.3.0's train.log, as written)


def test_training_rate_is_read_from_joeynmts_log_after_the_warmup():
    points = compare.joey_points(JOEY_LOG)
    assert [(step, rate) for step, _, rate in points] == [(5, 972), (10, 932), (15, 1027)]
    rate, seconds, steps = compare.timed_rate(points, warmup=5)
    # each window's rate x its duration, over the time from the warm-up's end to the last line
    assert seconds == pytest.approx(19.347) and steps == 10
    assert rate == pytest.approx((932 * 10.847 + 1027 * 8.5) / 19.347)
    with pytest.raises(SystemExit):
        compare.timed_rate(points, warmup=15)  # nothing logged after the warm-up
