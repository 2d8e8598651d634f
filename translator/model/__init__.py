"""Stage 2, the model: the Transformer of "Attention Is All You Need", its loss, and a run's
weights loaded into it.

May import data (the vocabularies it is built for) and the shared top-level modules; never
training, decoding, serving or cli.
"""
