"""Training and evaluation: metrics (:mod:`.metrics`) and ``cloudseg eval`` (:mod:`.evaluate`).

Submodules are imported on use, so ``cloudseg.train.metrics`` stays light.
"""
