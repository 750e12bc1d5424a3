"""Benchmark protocols and their metrics; the data set readers they use are in `indexer.datasets`.

Entry points: `retrieval.evaluate_retrieval` (Holidays, revisited Oxford/Paris mAP),
`reid.evaluate_reid` (VIPeR, Market-1501 CMC/mAP), with `reid_protocols`, `reid_metrics` and
`retrieval_metrics` holding the protocols and metrics themselves.
"""
