"""The embedded collection backend: FAISS indexes over items kept in a write-ahead log and checkpoints."""
