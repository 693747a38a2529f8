"""embedsvc: a gRPC service for embedding models, vector arithmetic and latent spaces."""

__version__ = "0.2.0"
