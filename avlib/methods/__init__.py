"""Methods: one module each, with its typed config and presets, model, step, data, evaluation and stages.

``l3`` (L3-Net), ``ave`` (AVE-Net) and ``avol`` (AVOL-Net) share the AVC task (:mod:`~avlib.methods.avc`); ``dmc``
(Deep Multimodal Clustering) and ``cavl`` (Curriculum Audiovisual Learning) share the clustering nets' data and
localization scores (:mod:`~avlib.methods.clustering`); ``counting`` is CAVL's Poisson regression of the number of
sound sources, from scratch or from a trained CAVL audio stream; ``separation`` is CAVL's visually guided U-Net, trained
by mix-and-separate with a frozen CAVL net giving the visual vector. :mod:`~avlib.methods.run` trains any of them; the
registry (:mod:`~avlib.methods.base`) lists them::

    from avlib.methods import get_method, train
    cfg = get_method("dmc").config("quick", steps=100)
    run = train(cfg, seed=0)          # run.model, run.history, run.scores
"""

from avlib.methods import ave, avol, cavl, counting, dmc, dsol, l3, separation  # noqa: F401 - importing registers each method
from avlib.methods.base import METHODS, Method, MethodConfig, StagePlan, get_method, register
from avlib.methods.run import Run, evaluate_checkpoint, load, train

__all__ = ["METHODS", "Method", "MethodConfig", "Run", "StagePlan", "evaluate_checkpoint", "get_method", "load",
           "register", "train"]
