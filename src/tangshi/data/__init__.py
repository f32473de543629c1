"""Corpora, characters and the statistics read from them: text, corpus, vocab, line index."""
