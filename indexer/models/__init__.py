"""Trained models, each with its module, its training and its loader in one sub-package."""
