"""benchmarks/bench_dsol.py: the three claim checks, on hand-made results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_dsol", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dsol.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _row(ciou30: float, nsa: float = 0.5) -> dict:
    return {"paper": {"ciou30": ciou30, "auc": 0.1, "nsa": nsa}, "released_code": {"ciou30": 0.0, "auc": 0.0,
                                                                                   "nsa": 0.0}}


def _result(dsol=(0.10, 0.8), no_product_nsa=0.7, no_alternation=0.05, audio_free=0.03, centred=0.0):
    baselines = {b: _row(0.0) for b in bench.BASELINES}
    baselines[bench.AUDIO_FREE] = _row(audio_free)
    baselines["centred box (half the image)"] = _row(centred)
    return {"mosaic": {"DSOL": _row(*dsol), "without the product": _row(0.02, no_product_nsa),
                       "without the alternation": _row(no_alternation)}, "baselines": baselines}


def test_the_checks_hold_and_each_fails_on_its_own_case():
    assert all(bench.checks(_result()).values())
    assert not bench.checks(_result(audio_free=0.10))["CIoU@0.3 above every baseline"]  # a tie is not above
    assert not bench.checks(_result(centred=0.2))["CIoU@0.3 above every baseline"]
    failed = bench.checks(_result(no_product_nsa=0.9))
    assert not failed["NSA higher with the product"] and failed["CIoU@0.3 above every baseline"]
    assert not bench.checks(_result(no_alternation=0.12))["CIoU@0.3 higher with the alternation"]
