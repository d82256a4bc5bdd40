"""Published MegaDetector checkpoints: what each one is (facts) and how to unpickle it (loading).

``facts`` needs no torch (zip + JSON only), so the CLI and tests can read a checkpoint's
family, image size and thresholds cheaply; ``loading`` needs the PyTorch extra.
"""
