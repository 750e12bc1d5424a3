"""Where galleries live: SQL rows (SQLAlchemy), the FAISS index, per-image feature files, and
atomic file writes. Imports nothing else of tansaku.

Entry points: `storage.db.open_database`, `storage.models` (Gallery, Image, Source, IndexRun),
`storage.vector_index.VectorIndex`, `storage.feature_store.FeatureStore`,
`storage.gallery_files.GalleryFiles`, `storage.atomic.atomic_write`, `storage.migrations.migrate`.
"""
