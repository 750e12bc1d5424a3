"""The application: the `Engine` facade over galleries, indexing and queries, and the `tansaku` CLI.

Entry points: `engine.core.Engine` (`index_folder`, `query`, `galleries`, `delete_gallery`), `engine.cli`
(the Typer app), `engine.evaluation` (benchmarks), `engine.training` (`train_projection`),
`engine.errors.TansakuError` (user errors), `engine.settings.Settings`.
"""
