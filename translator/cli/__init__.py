"""The `translator` command line: one short function per stage, no model code.

    translator prepare                  # find/download Multi30k, tokenize, build vocab (cached)
    translator train --set train.max_minutes=30
    translator translate "A dog runs through the snow."
    translator evaluate --bleu --split test2016
    translator serve                    # HTTP API, LibreTranslate API and a web page
    translator export --quantization int8   # CTranslate2, for --engine ctranslate2

main.py is the entry point (it imports every command module, which registers its commands);
app.py holds the app and what the commands share.
User errors (bad config, missing data, bad run dir, unreadable input) print one line on stderr
and exit non-zero: 2 for a bad config or argument, 1 for the rest (TRANSLATOR_DEBUG=1 shows the
traceback instead). torch and spaCy are imported inside the commands so that `--help` stays
instant.
"""
