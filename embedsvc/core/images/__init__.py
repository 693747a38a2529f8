"""Images and latent spaces: decoding and encoding pictures, VAE generation, directions, data sets and training."""
