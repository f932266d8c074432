"""Names that models and guides share: the only contract between them."""

#: Plate over sequences (dim -1); subsampled for minibatches.
SEQUENCES = "sequences"
#: Latent state at the first time, event ``(Dz,)``.
Z0 = "z0"
#: Latent path at the remaining times, event ``(K, Dz)``.
Z = "z"
#: Observations at all times, event ``(K+1, Dx)``.
X = "x"

LATENT_SITES = (Z0, Z)
