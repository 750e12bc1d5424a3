"""Search: a gallery's global shortlist, re-ranked by local-feature matching and geometric
verification.

Entry points: `matcher.search.Searcher`, `matcher.rerank.rerank_mode` / `RerankConf`,
`matcher.matching.match_pairs`, `matcher.verification.verify`.
"""
