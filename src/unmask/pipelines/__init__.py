"""User jobs built from core + decoders + modalities. Plain classes; Ray adapters live in ``cluster``."""
