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

#: Plate over the data points of a static model (dim -1); subsampled for minibatches. Its
#: latent site is ``"z"`` (event ``(Dz,)``) and its observed site ``"x"`` (event ``(D,)``).
DATA = "data"
