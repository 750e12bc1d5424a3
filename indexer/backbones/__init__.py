"""CNN backbones shared by extractors and their training.

Entry points: `efficientnet_lite.efficientnet_lite0` (the pretrained EfficientNet-Lite0, whose
`forward_stages` gives named intermediate maps) and `efficientnet_lite.normalize_input`.
"""
