"""Maps of a vector space: gathering points, PCA projections, Gaussian mixtures and plots."""
