"""Learned projections of global descriptors: XQDA and kernel XQDA (person metric learning) and
PCA-whitening (landmark galleries).

Entry points: `gallery.make_projection`, `gallery.load_projector`, `gallery.PROJECTIONS`,
`xqda.XQDA`, `kxqda.KXQDA`, `pca_whitening.fit` / `PCAWhitening`.
"""
