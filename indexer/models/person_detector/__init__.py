"""Finding people in scene photos: OpenCV HOG / Haar over an image pyramid, NMS, and a
person / not-person classifier on the EfficientNet-Lite0 backbone that cuts false alarms."""
