"""Scale-out on NVIDIA Triton Inference Server: the model repository export (``export``), a
PyTriton server on this host (``serve``, which starts ``server`` in .venv-triton) and the
cloud's gRPC client with failover (``client``)."""
