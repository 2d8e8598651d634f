"""The public Python API, where it has always been: `from translator.translate import Translator`
(or `from translator import Translator`). The class lives in translator/decoding/translator.py.

    translator = Translator.load("runs/a")            # the latest run with Translator.load()
    translator.translate(["A dog runs."], beam_size=5)
"""

from translator.decoding.translator import Translator

__all__ = ["Translator"]
