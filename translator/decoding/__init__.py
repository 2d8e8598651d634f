"""Stage 3, decoding: text in, text out. Greedy and beam search, ensembles, the `Translator`
text pipeline, the torch and CTranslate2 engines, the CTranslate2 export, and scoring with
sacreBLEU.

May import model, data and the shared top-level modules; never training, serving or cli.
"""
