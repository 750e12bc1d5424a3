"""Re-ID network with an attention branch (ABN, Fukui et al. CVPR 2019) on EfficientNet-Lite0.

- `functional.py`: pure maths (attention weighting, batch-hard triplet, temporal pooling, erasing);
- `model.py`: the network, the temporal attention pooling, and `load_abn` (the loader);
- `data.py`: PETA training identities (TownCentre, 3DPeS, SARC3D) read from file names;
- `train.py`: `train_reid`, resumable training on cached mid-level maps;
- `explain.py`: attention / Grad-CAM maps of a match and the masking check.
"""
