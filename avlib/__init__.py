"""avlib: self-supervised audio-visual learning, from the papers to full-scale training.

The library behind the avlib book. Each submodule holds one concept: ``audio`` and ``vision`` (frontends),
``data`` (SynthOrchestra, clip datasets, AVC pairs), ``nets`` (the papers' networks), ``cluster`` (soft-min, soft
k-means), ``losses``, ``metrics``, ``engine`` (the training loop), ``eval`` (evaluation protocols) and ``methods``
(one module per method: its configs at the quick / colab / full scales, and the one route that trains it).
"""

from avlib.runtime import choose_scale, current_scale, run_dir, select_device, setup_plotly

__version__ = "0.1.0"

__all__ = ["__version__", "choose_scale", "current_scale", "run_dir", "select_device", "setup_plotly"]

setup_plotly()
