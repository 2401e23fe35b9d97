"""Benchmarks and test beds (`cloudseg bench ...`): they start the graph and measure it."""


def cuda_available() -> bool:
    """Whether this host can run the cloud on a GPU (False also when torch cannot load)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False
