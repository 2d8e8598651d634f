"""CTranslate2 export: a run's model as a CTranslate2 model folder (decoding/ct2_engine.py
decodes with it).

    export(load_run(path), Path("runs/a/ct2"), quantization="int8")   # `translator export`

CTranslate2 is the int8 CPU inference engine behind OpenNMT, fairseq and Marian deployments. The
export is built with its model-spec API from our weights, and minds the details that would change
outputs silently:
- positions: CTranslate2's built-in sinusoidal table puts all sines before all cosines; ours (the
  paper's) interleaves them, so our own table (sinusoidal or learned) is stored in the model;
- embeddings are scaled by sqrt(d_model) (scale_embeddings), as ours are;
- post-norm layers (pre_norm=False; then no final LayerNorm), LayerNorm epsilon 1e-5;
- fused projections: self-attention Q;K;V in one matrix, cross-attention Q, then K;V;
- special tokens: our <sos>/<eos>/<unk> strings, the source's <eos> added by the engine;
- shared embeddings stay shared (the converter stores one copy of identical arrays);
- the run's lexical shortlist becomes CTranslate2's vocabulary map (vmap.txt, `use_vmap`).
Where CTranslate2's search differs from ours by design (it divides a beam hypothesis' score by
|Y|^alpha, not GNMT's ((5 + |Y|) / 6)^alpha, and takes one length limit per call), the engine
(ct2_engine.py) ranks CTranslate2's hypotheses itself, so that both engines rank them the same way
(to float noise; the searches' stopping rules still differ a little).

The export folder is self-contained: CTranslate2's model.bin, config.json and vocabularies, our
config.yaml, vocabularies and BPE (the same pre- and post-processing), and `translator.json`, which
says where the model came from and how to feed it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from translator.data.vocab import EOS, SOS, UNK
from translator.decoding.ct2_engine import INFO, ctranslate2_module
from translator.errors import InputError
from translator.files import atomic_folder, atomic_write_text

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16")


def model_spec(run):
    """CTranslate2's TransformerSpec holding the weights of `run` (a run_dir.Run)."""
    ctranslate2_module()
    import numpy as np
    from ctranslate2.specs import common_spec, transformer_spec

    m = run.cfg.model
    spec = transformer_spec.TransformerSpec.from_config(
        (m.encoder_layers, m.decoder_layers),
        m.n_heads,
        pre_norm=m.norm == "pre",
        activation=common_spec.Activation.RELU,
        alignment_layer=-1,
        alignment_heads=m.n_heads,  # attention returned = the last layer, heads averaged
    )
    spec.config.layer_norm_epsilon = 1e-5  # torch.nn.LayerNorm's
    model = run.model

    def array(tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy().copy()  # quantizing must not touch ours

    def linear(target, module) -> None:
        target.weight = array(module.weight)
        if module.bias is not None:
            target.bias = array(module.bias)

    def norm(target, module) -> None:
        target.gamma, target.beta = array(module.weight), array(module.bias)

    def positions(module) -> np.ndarray:
        return array(module.weight)  # our own table, sinusoidal or learned

    def attention(target, module, cross: bool) -> None:
        q, kv, out = module.w_q, module.w_kv, module.w_o
        if cross:  # query; fused key-value (our w_kv is already K then V); output
            linear(target.linear[0], q)
            linear(target.linear[1], kv)
            linear(target.linear[2], out)
        else:  # fused query-key-value; output
            target.linear[0].weight = np.concatenate([array(q.weight), array(kv.weight)])
            target.linear[0].bias = np.concatenate([array(q.bias), array(kv.bias)])
            linear(target.linear[1], out)

    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = array(model.src_embed.lut.weight)
    enc.position_encodings.encodings = positions(model.src_pos)
    for target, layer in zip(enc.layer, model.encoder.layers, strict=True):
        attention(target.self_attention, layer.self_attn, cross=False)
        norm(target.self_attention.layer_norm, layer.sublayers[0].norm)
        linear(target.ffn.linear_0, layer.ffn.w_1)
        linear(target.ffn.linear_1, layer.ffn.w_2)
        norm(target.ffn.layer_norm, layer.sublayers[1].norm)
    dec.embeddings.weight = array(model.tgt_embed.lut.weight)
    dec.position_encodings.encodings = positions(model.tgt_pos)
    for target, layer in zip(dec.layer, model.decoder.layers, strict=True):
        attention(target.self_attention, layer.self_attn, cross=False)
        norm(target.self_attention.layer_norm, layer.sublayers[0].norm)
        attention(target.attention, layer.cross_attn, cross=True)
        norm(target.attention.layer_norm, layer.sublayers[1].norm)
        linear(target.ffn.linear_0, layer.ffn.w_1)
        linear(target.ffn.linear_1, layer.ffn.w_2)
        norm(target.ffn.layer_norm, layer.sublayers[2].norm)
    if m.norm == "pre":  # the final LayerNorm of a pre-norm stack
        norm(enc.layer_norm, model.encoder.norm)
        norm(dec.layer_norm, model.decoder.norm)
    linear(dec.projection, model.generator)

    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = UNK, SOS, EOS
    spec.config.decoder_start_token = SOS
    spec.config.add_source_eos = True  # our encoder reads the pieces, then <eos>
    spec.register_source_vocabulary(run.src_vocab.itos)
    spec.register_target_vocabulary(run.tgt_vocab.itos)
    return spec


def export(run, weights: str, output: Path, quantization: str = "float32") -> Path:
    """Write the CTranslate2 folder for `run` (loaded with `weights`) to `output`, atomically:
    a failed export leaves any earlier export in place."""
    from ctranslate2.converters.converter import Converter

    from translator.data.bundle import write_bundle_files
    from translator.run_dir import read_versions

    if quantization not in QUANTIZATIONS:
        raise InputError(
            f"unknown quantization {quantization!r}: choose {', '.join(QUANTIZATIONS)}"
        )
    spec = model_spec(run)

    class RunConverter(Converter):
        def _load(self):
            return spec

    output = Path(output)
    with atomic_folder(output, replace=True) as tmp:  # a failed export keeps the last one
        vmap = None
        if run.shortlist is not None:  # the same shortlist as CTranslate2's vocabulary map
            vmap = tmp / "vmap.source.txt"
            lines = run.shortlist.vmap_lines(run.src_vocab.itos, run.tgt_vocab.itos)
            vmap.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        RunConverter().convert(
            str(tmp / "model"), vmap=vmap and str(vmap), quantization=quantization, force=True
        )
        if vmap:
            vmap.unlink()
        for item in (tmp / "model").iterdir():
            item.rename(tmp / item.name)
        (tmp / "model").rmdir()
        write_bundle_files(
            tmp, run.cfg, run.src_vocab, run.tgt_vocab, run.subword, run.tgt_subword,
            versions=read_versions(run.path),  # what made the model, not the export
            shortlist=run.shortlist,
        )  # fmt: skip
        info = {
            "format": "translator-ctranslate2",
            "version": 1,
            "run": str(run.path),
            "weights": weights,
            "weights_sha256": hashlib.sha256((run.path / weights).read_bytes()).hexdigest(),
            "quantization": quantization,
            "src_lang": run.cfg.data.src_lang,
            "tgt_lang": run.cfg.data.tgt_lang,
            "preprocess": "spaCy tokens (config.yaml data.src_lang, data.lowercase), then the BPE "
            "of subword.json when present; pieces as CTranslate2 tokens; the engine adds <eos>",
            "postprocess": "drop <pad>/<sos>; a piece starting with the joiner U+FFED joins the "
            "previous one, others are separated by one space",
            "max_source_tokens": run.cfg.model.max_positions - 1,
        }
        atomic_write_text(tmp / INFO, json.dumps(info, indent=2, ensure_ascii=False))
    return output
