"""Trainable models kept with their training and their loader: attribute heads, person detector."""
