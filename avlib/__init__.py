"""avlib: self-supervised audio-visual learning, from the papers to full-scale training.

The library behind the avlib book. Each submodule holds one concept: ``audio`` and ``vision`` (frontends),
``data`` (SynthOrchestra, clip datasets, AVC pairs), ``nets`` (the papers' networks), ``cluster`` (soft-min, soft
k-means), ``losses``, ``metrics``, ``train`` (the engine), ``configs`` (quick / colab / full scales).
"""

from avlib.runtime import current_scale, select_device, setup_plotly

__version__ = "0.1.0"

__all__ = ["__version__", "current_scale", "select_device", "setup_plotly"]

setup_plotly()
