"""``cloudseg train``: SR, segmentation and frame-selector training, checkpoints and cards.

A tool layer: runtime code never imports it (test/test_layers.py); what serving needs from
training lives in :mod:`cloudseg.metrics` and :mod:`cloudseg.models.cards`.
"""
