"""translator: an end-to-end Transformer translator (Multi30k English→German by default).

    from translator import Translator
    Translator.load("runs/a").translate(["A dog runs."])

The folders are the stages (docs/architecture.md): data/ -> model/ -> decoding/ -> training/ and
serving/, with cli/ on top. `Translator` is loaded on first use, so `import translator` (and
`translator --help`) stays free of torch.
"""

__all__ = ["Translator"]


def __getattr__(name: str):
    if name == "Translator":
        from translator.decoding.translator import Translator

        return Translator
    raise AttributeError(f"module 'translator' has no attribute {name!r}")
