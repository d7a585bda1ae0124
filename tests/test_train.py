"""Tests of the training engine (avlib.train), including the faults it must survive.

This file is also the worker script for the fault tests: ``python tests/test_train.py MODE OUT_DIR`` trains the tiny
problem below in a separate process that is then killed (SIGKILL) mid-step or mid-checkpoint-write, resumed, or run
under ``torchrun`` for the two-process DDP comparison.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import avlib.train as train
from avlib.train import NonFiniteLossError, TrainConfig, fit, load_checkpoint, lr_multiplier, save_checkpoint

HERE = Path(__file__).resolve()
N_ITEMS, BATCH, STEPS, CKPT_EVERY = 48, 6, 30, 7  # 8 batches per epoch; checkpoints at 7, 14, 21, 28, 30
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}


# ------------------------------------------------------------------------------------------------ the tiny problem


def tiny_data(n: int = N_ITEMS) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] - x[:, 1] > 0).long())


def tiny_model(dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 2))


def noisy_step(model: nn.Module, batch) -> dict:
    """Uses all three RNGs (dropout: torch; input noise: numpy; loss weight: python), so resume must restore each."""
    x, y = batch
    x = x + 0.01 * torch.from_numpy(np.random.randn(*x.shape)).to(x.dtype)  # noqa: NPY002
    loss = nn.functional.cross_entropy(model(x).float(), y) * (1 + 0.01 * random.random())
    return {"loss": loss, "acc": (model(x).argmax(1) == y).float().mean()}


def plain_step(model: nn.Module, batch) -> dict:
    """Calls the model's layers one by one (not ``model(x)``): the engine must still synchronise DDP gradients."""
    x, y = batch
    return {"loss": nn.functional.cross_entropy(model[1:](model[0](x)).float(), y)}


def run_tiny(out: Path | None, step_fn=noisy_step, dropout: float = 0.2, **overrides):
    torch.set_num_threads(1)
    model = tiny_model(dropout)
    cfg = dict(
        steps=STEPS,
        batch_size=BATCH,
        out_dir=out,
        ckpt_every=CKPT_EVERY,
        log_every=4,
        schedule="cosine",
        warmup_steps=3,
        seed=11,
        progress=False,
        precision="fp32",
    )
    cfg.update(overrides)
    result = fit(model, step_fn, tiny_data(), torch.optim.Adam(model.parameters(), lr=0.02), TrainConfig(**cfg))
    return model, result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def run_worker(mode: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HERE), mode, str(out)], env=ENV, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    run_tiny(out)
    return weights(out / "last.pt")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item()}"


# ------------------------------------------------------------------------------------------------------- faults


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, reference):
    killed = run_worker("kill_in_step", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 21 and state["batch_in_epoch"] == 5  # mid-epoch: the data position matters
    resumed = run_worker("resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(tmp_path / "last.pt")["step"] == STEPS
    assert_same_weights(weights(tmp_path / "last.pt"), reference)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # the killed run's unsaved steps were dropped and re-logged once


def test_kill_during_checkpoint_write_keeps_latest_readable(tmp_path, reference):
    killed = run_worker("kill_in_save", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stale = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # the process really died halfway through a write
    with pytest.raises(Exception):  # noqa: B017 - the half-written file is not a checkpoint
        torch.load(stale[0], weights_only=False)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 14  # the previous checkpoint, complete
    resumed = run_worker("resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(tmp_path.glob(".last.pt.*.tmp"))
    assert_same_weights(weights(tmp_path / "last.pt"), reference)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        out = plain_step(model, batch)
        if calls["n"] == 13:
            out["loss"] = out["loss"] * float("nan")
        return out

    with pytest.raises(NonFiniteLossError, match=r"at step 13.*last good checkpoint .*last\.pt \(step 7\)"):
        run_tiny(tmp_path, step_fn=poisoned)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 7
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))
    model, result = run_tiny(tmp_path, step_fn=plain_step, resume=True)  # training can continue from it
    assert result.history[7]["step"] == 8 and result.step == STEPS


def test_two_process_ddp_matches_one_process_on_combined_batch(tmp_path):
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*cmd, str(HERE), "ddp", str(ddp_out)], env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(ddp_out / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    single, result = run_tiny(tmp_path / "one", step_fn=plain_step, dropout=0.0, batch_size=2 * BATCH)
    ddp_history = [json.loads(line) for line in (ddp_out / "metrics.jsonl").read_text().splitlines()]
    # The logged DDP loss is the mean over both ranks: the same number as the combined batch's loss.
    np.testing.assert_allclose([h["loss"] for h in ddp_history], [h["loss"] for h in result.history], rtol=1e-5)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(state["model"][k], v, rtol=1e-5, atol=1e-6)
    moved = sum((v - tiny_model(0.0).state_dict()[k]).abs().sum() for k, v in single.state_dict().items())
    assert moved > 0.1  # the comparison is between trained weights, not two copies of the initialisation


# ---------------------------------------------------------------------------------------------------- the engine


def test_resume_in_process_with_fp16_scaler_is_exact(tmp_path):
    _, straight = run_tiny(tmp_path / "a", precision="fp16", schedule="constant", ckpt_every=5)
    run_tiny(tmp_path / "b", precision="fp16", schedule="constant", ckpt_every=5, steps=12)
    _, resumed = run_tiny(tmp_path / "b", precision="fp16", schedule="constant", ckpt_every=5, resume=True)
    assert straight.precision == "fp16"
    scaler = load_checkpoint(tmp_path / "b" / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # the scaler really was in use and saved
    assert_same_weights(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_history_jsonl_and_schedule(tmp_path):
    _, result = run_tiny(tmp_path, step_fn=plain_step, log_every=7)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == result.history and len(rows) == STEPS
    for i, row in enumerate(rows):  # warm-up 3 steps, then cosine from 1 to 0 over the remaining 27
        expect = (i + 1) / 3 if i < 3 else 0.5 * (1 + math.cos(math.pi * (i - 3) / (STEPS - 3)))
        assert row["lr"] == pytest.approx(0.02 * expect)
    fig = result.figure()
    assert list(fig.data[0].x) == list(range(1, STEPS + 1))
    assert rows[-1]["loss"] < rows[0]["loss"]


LIVE_PLOT_CELL = """
import time
import torch
from avlib.train import TrainConfig, fit

torch.manual_seed(0)
model = torch.nn.Linear(2, 1)
data = torch.utils.data.TensorDataset(torch.randn(64, 2), torch.randn(64, 1))

def step(m, batch):
    time.sleep(0.15)  # slow enough for the curve to be redrawn while training (every 3 s)
    x, y = batch
    return {"loss": ((m(x) - y) ** 2).mean()}

result = fit(model, step, data, torch.optim.SGD(model.parameters(), lr=0.1),
             TrainConfig(steps=40, batch_size=8, log_every=1, progress=False, precision="fp32"))
print([round(h["loss"], 6) for h in result.history])
"""


def test_live_plot_in_a_real_kernel_leaves_one_output_with_the_final_curve():
    # Run in a real Jupyter kernel, as nbval and the book do: every redraw must replace the one figure output, and
    # the output that stays is the complete final curve.
    import ast

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LIVE_PLOT_CELL)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1, [o.get("output_type") for o in outputs]
    losses = ast.literal_eval(next(o for o in outputs if o.output_type == "stream").text.strip())
    trace = figures[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]
    assert list(trace["x"]) == list(range(1, 41))
    assert [round(v, 6) for v in trace["y"]] == losses


def test_live_plot_is_off_outside_a_kernel(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: shown.append(args))
    run_tiny(None, step_fn=plain_step, steps=2)  # live_plot=None: off outside a Jupyter kernel
    assert shown == []


def test_compiled_model_trains_and_checkpoints_plain_weights(tmp_path):
    # The "eager" backend runs TorchDynamo's capture without code generation: the engine's compile path, fast.
    run_tiny(tmp_path / "c", step_fn=plain_step, compile="eager", steps=6, dropout=0.0)
    plain, _ = run_tiny(tmp_path / "p", step_fn=plain_step, steps=6, dropout=0.0)
    saved = weights(tmp_path / "c" / "last.pt")
    assert saved.keys() == plain.state_dict().keys()  # no "_orig_mod." prefixes
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(saved[k], v)


def test_lr_schedules():
    cfg = TrainConfig(steps=10, schedule="step", milestones=(4, 8), gamma=0.5)
    assert [lr_multiplier(s, cfg) for s in range(10)] == [1] * 4 + [0.5] * 4 + [0.25] * 2
    cfg = TrainConfig(steps=10, schedule="linear", min_lr_ratio=0.1)
    assert lr_multiplier(0, cfg) == 1 and lr_multiplier(5, cfg) == pytest.approx(0.1 + 0.9 * 0.5)


def test_precision_choice_and_autocast(monkeypatch):
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            flags.update(line.split(":")[1].split())
    if flags:
        assert train.cpu_has_native_bf16() == bool(flags & {"amx_bf16", "avx512_bf16"})
    cpu = torch.device("cpu")
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)
    assert train.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    assert train.resolve_precision("auto", cpu) == "fp32"
    assert train.resolve_precision("fp16", cpu) == "fp16"
    assert train.resolve_precision("auto", torch.device("mps")) == "fp32"

    seen = []

    def record(model, batch):
        x, y = batch
        out = model(x)
        seen.append(out.dtype)
        return {"loss": nn.functional.cross_entropy(out.float(), y)}

    for precision, dtype in [("bf16", torch.bfloat16), ("fp32", torch.float32), ("fp16", torch.float16)]:
        seen.clear()
        _, result = run_tiny(None, step_fn=record, precision=precision, steps=2)
        assert result.precision == precision and seen == [dtype, dtype]


def test_channels_last_clipping_and_dataloader_input():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 6, 6)
    data = DataLoader(TensorDataset(images, torch.arange(8) % 2), batch_size=4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    layouts = []

    def step(m, batch):
        x, y = batch
        layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        return {"loss": 100 * nn.functional.cross_entropy(m(x), y)}

    cfg = TrainConfig(steps=1, channels_last=True, clip_grad=1e-3, precision="fp32", progress=False)
    result = fit(model, step, data, torch.optim.SGD(model.parameters(), lr=1.0), cfg)
    assert layouts == [True] and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert result.history[0]["grad_norm"] > 1e-3  # the raw gradient was larger than the clip ...
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert change.norm().item() == pytest.approx(1e-3, rel=1e-3)  # ... and the SGD step has exactly the clipped norm


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(steps=1, precision="fp8")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        run_tiny(None, batch_size=100)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="scalar"):
        run_tiny(None, step_fn=lambda m, b: {"loss": m(b[0])}, steps=1)


# ----------------------------------------------------------------------------------------------- worker entry point


def _worker(mode: str, out: Path) -> None:
    if mode == "kill_in_step":
        calls = {"n": 0}

        def dying(model, batch):
            calls["n"] += 1
            if calls["n"] == 24:  # after the checkpoint of step 21, before the one of step 28
                os.kill(os.getpid(), signal.SIGKILL)
            return noisy_step(model, batch)

        run_tiny(out, step_fn=dying)
    elif mode == "kill_in_save":
        real_save, saves = torch.save, {"n": 0}

        def half_then_die(obj, f):
            saves["n"] += 1
            if saves["n"] == 3:  # the checkpoint of step 21
                buf = io.BytesIO()
                real_save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(obj, f)

        torch.save = half_then_die
        run_tiny(out)
    elif mode == "resume":
        run_tiny(out, resume=True)
    elif mode == "ddp":
        run_tiny(out, step_fn=plain_step, dropout=0.0)
        # Skip interpreter teardown: with gloo it sometimes hangs after all work is done (pytorch/pytorch#190489).
        sys.stdout.flush()
        os._exit(0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
