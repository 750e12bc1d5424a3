"""Images in, descriptors out: reading images, feature extractors, learned projections and the
folder -> gallery indexing pipeline.

Entry points: `indexer.pipeline.index_folder`, `indexer.describe.Describer`,
`indexer.images.read_image`, `indexer.config` (a gallery's configuration schema),
`indexer.profiles` (presets and `--model` specs), `indexer.extractors` (`build_global`,
`build_local`, `build_joint`), `indexer.projections`, `indexer.datasets`, `indexer.registry`,
`indexer.errors.ModelLoadError`.
"""
