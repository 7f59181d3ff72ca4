"""unmask: masked-diffusion language models through one decoding core."""

__version__ = "0.1.0"
