"""Word models as the API uses them: lookups, gensim-exact vector arithmetic, analogy evaluation."""
