"""Pedestrian attribute recognition on EfficientNet-Lite0: PETA reader, heads, training, loader."""
