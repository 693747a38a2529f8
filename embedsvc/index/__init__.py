"""Durable vector collections: the only package that touches FAISS and the collections' files."""
