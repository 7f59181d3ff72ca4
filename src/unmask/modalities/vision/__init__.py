"""Vision modality: Pillow front end, procedural scenes (the reference data), and the VLM (SigLIP tower + projector ->
image Segments) with its LLaDA-V / Dream-VL layout loaders."""

from .image import ImageConfig, ImageError, load_image, preprocess

__all__ = ["ImageConfig", "ImageError", "load_image", "preprocess"]
