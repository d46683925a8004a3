"""Motion Inversion: the method, free of any ComfyUI import.

Everything that *is* the method lives here: the `MotionEmbedding` container, its
initialisation and resampling, the EDM objective, the training loop written against a
plain denoiser callable, augmentation, the file format and the video reader. The ComfyUI
nodes (``nodes/``) and the diffusers adapter drive this package; it never imports them.
"""

__version__ = "0.1.0"
