"""Evaluation protocols for any model with the right interface.

- :mod:`~avlib.eval.avc`: AVC accuracy, per-clip inputs and features (``correspondence_logit``, ``embed_*``);
- :mod:`~avlib.eval.representation`: linear probes and cross-modal retrieval nDCG of any features;
- :mod:`~avlib.eval.shortcut`: the frame-alignment shortcut tests of Objects that Sound;
- :mod:`~avlib.eval.localization`: one scoring path for every method's heatmaps, with baselines;
- :mod:`~avlib.eval.objective`: the training objective on held-out data.
"""
