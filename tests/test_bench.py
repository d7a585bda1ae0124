"""The benchmark harness: FLOP counting against a hand count, its derived numbers, memory sampling, JSON output."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from avlib.audio import first_example, make_frontend
from avlib.methods import get_method

_spec = importlib.util.spec_from_file_location(
    "harness", Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"
)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def mse_step(model: nn.Module, batch) -> dict:
    x, y = batch
    return {"loss": (model(x) - y).pow(2).mean()}


def test_flops_match_hand_count_and_derived_numbers_agree():
    torch.set_num_threads(1)
    b, d_in, d_hid, d_out = 16, 64, 32, 8
    model = nn.Sequential(nn.Linear(d_in, d_hid, bias=False), nn.ReLU(), nn.Linear(d_hid, d_out, bias=False))
    batch = (torch.randn(b, d_in), torch.randn(b, d_out))
    r = harness.benchmark_model(model, mse_step, batch, b, precision="fp32", steps=3, warmup=1, matmul_n=128)
    # forward 2·b·i·o per layer; backward: weight gradient for both layers, input gradient only for the second
    # (the data needs none): 2 + 3 matrix products of 2·b·i·o FLOPs.
    assert r["flops_per_step"] == 2 * (2 * b * d_in * d_hid) + 3 * (2 * b * d_hid * d_out)
    assert r["step_seconds"] == sorted(r["step_seconds_all"])[1]  # the median of three
    assert r["samples_per_s"] == pytest.approx(b / r["step_seconds"])
    assert r["achieved_flops"] == pytest.approx(r["flops_per_step"] / r["step_seconds"])
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_flops"] / r["peak_matmul_flops"]["fp32"])
    assert set(r["peak_matmul_flops"]) == {"fp32", "bf16"} and all(v > 0 for v in r["peak_matmul_flops"].values())
    json.dumps(r)


def test_matmul_peak_counts_two_n_cubed(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])  # three timed products: 0.5 s, 0.25 s, 1 s
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    assert harness.matmul_peak(torch.device("cpu"), torch.float32, 64, repeats=3) == 2 * 64**3 / 0.25


def test_peak_rss_sees_a_short_lived_allocation():
    with harness._PeakRSS() as rss:
        x = torch.ones(16 * 2**20)  # 64 MiB, written so the pages are resident
        time.sleep(0.02)  # alive for 20 ms, a short training step: 20 sampling intervals
        del x
    assert rss.peak - rss.start >= 48 * 2**20


def test_registered_method_cli_writes_json(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    argv = ["l3", "--scale", "quick", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--matmul-n", "128"]
    assert harness.main([*argv, "--precision", "fp32", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["method"] == "l3" and r["scale"] == "quick" and r["batch_size"] == 2 and r["precision"] == "fp32"
    model = get_method("l3").model(get_method("l3").config("quick"))
    assert r["flops_per_step"] > 0 and r["parameters"] == sum(p.numel() for p in model.parameters())


def _conv_and_linear_flops(model: nn.Module, image: torch.Tensor, spec: torch.Tensor) -> tuple[int, int]:
    """Forward FLOPs of every Conv2d and Linear on ``(image, spec)`` (2·in·k·k per output value), and of the first conv
    of each stream (whose input, the data, needs no gradient); counted from the layers' output shapes with hooks."""
    counted: list[tuple[nn.Module, int]] = []

    def hook(mod: nn.Module, _inp, out: torch.Tensor) -> None:
        per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] if isinstance(
            mod, nn.Conv2d) else mod.in_features
        counted.append((mod, 2 * per_out * out.numel()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(image, spec)
    for h in handles:
        h.remove()
    firsts = [next(m for m in stream.modules() if isinstance(m, nn.Conv2d)) for stream in (model.visual, model.audio)]
    return sum(f for _, f in counted), sum(f for m, f in counted if any(m is first for first in firsts))


@pytest.mark.parametrize("method", ["dmc", "cavl"])
def test_harness_counts_the_clustering_nets_flops(method):
    """At quick scale: full-scale DMC alone takes about 10 s here (building it and one counted step at batch 2 on one
    core), and CAVL's VGGish on a 512x432 spectrogram several times more. The step computes its spectrograms from the
    batch's waveforms (forward only: the data needs no gradient), so their products are counted too."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    m = get_method(method)
    cfg = m.config("quick")
    r = harness.benchmark_method(method, "quick", 2, precision="fp32", steps=1, warmup=0, matmul_n=64)
    torch.manual_seed(0)
    model = m.model(cfg)
    batch = m.example_batch(cfg, 2)
    frontend = make_frontend(cfg.audio)
    with FlopCounterMode(display=False) as counter:
        spec = first_example(frontend, batch["audio"])
    forward, first = _conv_and_linear_flops(model, batch["image"], spec)
    # backward: a weight and an input gradient per layer (2x forward), minus the input gradient of the first convs
    layers = 3 * forward - first
    clustering = r["flops_per_step"] - layers - counter.get_total_flops()  # the clustering's batched products
    assert 0 < clustering < 0.02 * layers, (r["flops_per_step"], layers, counter.get_total_flops())
    assert r["method"] == method and r["parameters"] == sum(p.numel() for p in model.parameters())


def test_bench_models_covers_dmc_and_cavl(tmp_path, capsys):
    torch.set_num_threads(1)
    _bspec = importlib.util.spec_from_file_location(
        "bench_models", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
    )
    bench_models = importlib.util.module_from_spec(_bspec)
    _bspec.loader.exec_module(bench_models)
    out = tmp_path / "models.json"
    argv = ["--scale", "quick", "--methods", "dmc", "cavl", "--batch-size", "2", "--steps", "1", "--warmup", "0"]
    assert bench_models.main([*argv, "--matmul-n", "64", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["method"] for r in result["records"]} == {"dmc", "cavl"}
    assert all(r["flops_per_step"] > 1e8 and r["batch_size"] == 2 for r in result["records"])
    with pytest.raises(SystemExit):
        bench_models.main(["--methods", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_a_methods_default_batch_is_one_devices_share(monkeypatch):
    """At full scale each model is timed at what one device takes: the papers' per-GPU share of their global batch."""
    seen = {}

    def record(model, step_fn, batch, batch_size, **kwargs):
        seen[type(model).__name__] = (batch_size, batch["image"].shape[0], batch["audio"].shape[0])
        return {}

    monkeypatch.setattr(harness, "benchmark_model", record)
    for name in ("l3", "ave", "dmc"):
        r = harness.benchmark_method(name, "full")
        assert (r["global_batch"], r["micro_batch"]) == {"l3": (256, 16), "ave": (2048, 128), "dmc": (64, None)}[name]
    assert seen == {"L3Net": (16, 16, 16), "AVENet": (128, 128, 128), "DMCNet": (64, 64, 64)}


def test_bench_shortcut_trains_through_the_methods_route(monkeypatch):
    """One seed of the shortcut benchmark on a tiny AVE-Net world: both samplings trained by ``avlib.methods.train``,
    scored on the method's held-out clips, and the verdict follows the margins."""
    torch.set_num_threads(1)
    _sspec = importlib.util.spec_from_file_location(
        "bench_shortcut", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_shortcut.py"
    )
    bench_shortcut = importlib.util.module_from_spec(_sspec)
    _sspec.loader.exec_module(bench_shortcut)
    ave = get_method("ave")
    quick = ave.config("quick")
    small = quick.replace(steps=2, batch_size=8, data={**quick.data, "size": 36}, train_clips=24)
    monkeypatch.setitem(ave.presets, "quick", small)
    r = bench_shortcut.run_seed(0, "quick", remedy=False)
    assert set(r) == {"seed", "frame_aligned", "naive", "acc_gap", "retrieval_gap", "holds", "chapter_asserts"}
    # the chapter's section-3 asserts, recomputed here from the numbers: the first one with its 0.05 margin
    asserts = r["chapter_asserts"]
    assert len(asserts) == 6 and all(isinstance(v, bool) for v in asserts.values())
    assert asserts["naive AVC > aligned AVC + 0.05"] == (r["naive"]["acc_own"] > r["frame_aligned"]["acc_own"] + 0.05)
    for name in ("frame_aligned", "naive"):
        assert 0 <= r[name]["acc_own"] <= 1 and 0 <= r[name]["phase_probe"] <= 1
        assert set(r[name]["grid"]) == {"pos_on", "pos_off", "neg_on", "neg_off", "acc_on", "acc_off"}
    assert r["acc_gap"] == r["naive"]["acc_own"] - r["frame_aligned"]["acc_own"]
    assert r["holds"] == (r["acc_gap"] > bench_shortcut.ACC_MARGIN and r["retrieval_gap"] > bench_shortcut.NDCG_MARGIN)
