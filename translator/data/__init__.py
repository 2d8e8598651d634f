"""Stage 1, data: from a corpus on disk (or the Hub) to batches of token ids.

Finding and verifying Multi30k (`multi30k`), reading any corpus through `datasets` (`sources`),
spaCy tokenization, BPE, vocabularies, preparing and caching the id corpus, and length-bucketed
batches. May import the shared top-level modules (config, errors, files, run_dir); nothing of
model, training, decoding, serving or cli.
"""
