"""cloudseg: real-time semantic segmentation on a cloud GPU over a thin wireless link."""

__version__ = "0.1.0"
