"""Keyword search (BM25) over items' text: the only package that imports the keyword engine (tantivy)."""
