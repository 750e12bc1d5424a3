"""Data sets on disk, read by training and evaluation alike.

Entry points: `indexer.datasets.reid` (`load_viper`, `load_market`, `PersonSet`, `MarketSplit`)
and `indexer.datasets.retrieval` (`holidays_ground_truth`, `load_revisited_ground_truth`).
"""
