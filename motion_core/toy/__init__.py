"""The toy world: a test bench for the method, not the method.

A tiny image-to-video model with SVD's architecture trained on procedural clips whose
motion is known (``toyworld``, ``toyclips``, ``toytrain``, weights in ``weights/``), its
conversion to ComfyUI's format (``svd_convert``), the readings of a clip's motion class
(``readings`` by KLT, ``denseflow``), the evaluation the benchmarks run (``toyeval``) and
the CPU demo (``demo``). It imports the method (``motion_core``); the method never
imports it (a test checks).
"""
