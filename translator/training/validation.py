"""Validation: the loss and the greedy BLEU of a model on the validation split.

    validator = Validator(cfg, data, translator, device, amp_dtype)   # data: TrainingData
    validator.loss(), validator.bleu(), validator.keep_bleu()   # {"parent:valid": 31.2}
    validator.measure()              # all of them, as metrics.jsonl's validation fields

The loss is per target token without label smoothing; BLEU is sacreBLEU's on detokenized greedy
translations (the references lowercased for a model trained on lowercased text). The model is
left in training mode.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from translator.config import Config
from translator.data.batching import make_batch, sampler_for
from translator.decoding.scoring import score
from translator.model.loss import sequence_loss
from translator.training.optimizer_step import autocast

if TYPE_CHECKING:
    from translator.training.data_feed import TrainingData


SAMPLES = 4  # validation sentences shown in TensorBoard at each validation


class Validator:
    def __init__(
        self,
        cfg: Config,
        data: TrainingData,  # the validation split and the train.keep_eval sets
        translator,  # translate.Translator around the model being trained
        device: torch.device,
        amp_dtype: torch.dtype | None,
    ) -> None:
        self.cfg, self.translator, self.device, self.amp_dtype = cfg, translator, device, amp_dtype
        self.pairs = data.valid_pairs  # ids, filtered to fit the model
        self.sources, self.references = data.valid_src, data.valid_refs
        self.keep_sets = data.keep_sets  # {"parent:valid": (sources, references)}
        # (source, reference, output) of the first validation sentences, from the last bleu()
        self.samples: list[tuple[str, str, str]] = []

    def measure(self) -> dict:
        """val_loss, val_ppl, val_bleu, keep_bleu (train.keep_eval) and the seconds it took."""
        started = time.perf_counter()
        loss = self.loss()
        scores = {
            "val_loss": round(loss, 4),
            "val_ppl": round(math.exp(min(loss, 50)), 2),
            "val_bleu": self.bleu(),
        }
        if self.keep_sets:
            scores["keep_bleu"] = self.keep_bleu()
        return {**scores, "valid_s": round(time.perf_counter() - started, 1)}

    @torch.inference_mode()
    def loss(self) -> float:
        model, vocab = self.translator.model, self.translator.tgt_vocab
        model.eval()
        total, tokens = 0.0, 0
        for indices in sampler_for(self.pairs, self.cfg.data.max_tokens, None, 0, 1).epoch(0):
            batch = make_batch(
                self.pairs, indices, vocab.pad_id, vocab.sos_id, vocab.eos_id,
                self.cfg.model.right_to_left,
            )  # fmt: skip
            batch = batch.to(self.device)
            with autocast(self.device, self.amp_dtype):
                logits = model(batch.src, batch.tgt_in)
            total += sequence_loss(logits, batch.tgt_out, vocab.pad_id, 0.0).item()
            tokens += batch.n_tokens
        model.train()
        return total / max(tokens, 1)

    def bleu(self) -> float:
        return self._bleu(self.sources, self.references, keep_samples=True)

    def keep_bleu(self) -> dict[str, float]:
        """The greedy BLEU of each train.keep_eval set, by its name."""
        return {name: self._bleu(*texts) for name, texts in self.keep_sets.items()}

    def _bleu(self, sources: list[str], references: list[str], keep_samples=False) -> float:
        with autocast(self.device, self.amp_dtype):
            hyps = self.translator.translate(sources, beam_size=1)
        if keep_samples:
            self.samples = list(zip(sources, references, hyps))[:SAMPLES]
        return score(hyps, references, literature=False)["bleu"]
