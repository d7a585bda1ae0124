"""Tests of the training loop (avlib.engine.fit), including the faults it must survive.

The tiny problem below is shared by the other engine tests (``tests/test_engine_*.py``). This file is also the
worker script of the fault tests: ``python tests/test_train.py MODE OUT_DIR`` trains the tiny problem in a separate
process that is then killed (SIGKILL) mid-step or mid-checkpoint-write.
"""

from __future__ import annotations

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
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import avlib.engine.checkpoint as ck
import avlib.engine.precision as precision_mod
from avlib.engine import (
    CheckpointError,
    NonFiniteLossError,
    Stage,
    StageParts,
    TrainConfig,
    fit,
    load_checkpoint,
    resolve_precision,
    save_checkpoint,
)
from avlib.engine.checkpoint import find_checkpoints
from avlib.engine.schedule import lr_multiplier

HERE = Path(__file__).resolve()
N_ITEMS, BATCH, STEPS, CKPT_EVERY = 48, 6, 30, 7  # 8 steps per epoch; checkpoints at 7, 14, 21, 28, 30 (keep 2)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}


# ------------------------------------------------------------------------------------------------ the tiny problem


def tiny_data(n: int = N_ITEMS) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] - x[:, 1] > 0).long())


class NamedClips(Dataset):
    """The tiny data with item names (``item_name``) and each item's index in the batch, as ``(x, y, index)``."""

    def __init__(self) -> None:
        self.data = tiny_data()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i]
        return x, y, i

    def item_name(self, i: int) -> str:
        return f"clip_{i:04d}.mp4"


def tiny_model(dropout: float = 0.2, seed: int | None = 7) -> nn.Module:
    """The tiny net; ``seed=None`` initialises it from the global RNG."""
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 2))


def noisy_step(model: nn.Module, batch) -> dict:
    """Uses all three RNGs (dropout: torch; input noise: numpy; loss weight: python), so resume must restore each."""
    x, y = batch[0], batch[1]
    x = x + 0.01 * torch.from_numpy(np.random.randn(*x.shape)).to(x.dtype)  # noqa: NPY002
    loss = nn.functional.cross_entropy(model(x).float(), y) * (1 + 0.01 * random.random())
    return {"loss": loss, "acc": (model(x).argmax(1) == y).float().mean()}


def plain_step(model: nn.Module, batch) -> dict:
    """A per-item mean loss that calls the layers one by one (not ``model(x)``): DDP must still synchronise."""
    x, y = batch[0], batch[1]
    return {"loss": nn.functional.cross_entropy(model[1:](model[0](x)).float(), y)}


def tiny_config(out: Path | None, **overrides) -> TrainConfig:
    cfg = dict(steps=STEPS, batch_size=BATCH, out_dir=out, ckpt_every=CKPT_EVERY, log_every=4, schedule="cosine",
               warmup_steps=3, seed=11, progress=False, precision="fp32")
    cfg.update(overrides)
    return TrainConfig(**cfg)


def run_tiny(out: Path | None, step_fn=noisy_step, dropout: float = 0.2, lr: float = 0.02, data=None,
             model: nn.Module | None = None, **overrides):
    """Train the tiny problem; returns ``(model, result)`` (the optimiser is ``result.optimizer``)."""
    torch.set_num_threads(1)
    model = tiny_model(dropout) if model is None else model
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = fit(model, step_fn, tiny_data() if data is None else data, opt, tiny_config(out, **overrides))
    result.optimizer = opt
    return model, result


def tiny_stages(calls: dict | None = None, seen: dict | None = None, on_step=None) -> list[Stage]:
    """Two stages of the tiny problem: ``first`` (10 steps, Adam 0.02) and ``second`` (12 steps, Adam 0.01, its own
    initialisation, overwritten from ``first``). ``calls`` counts step calls per stage, ``seen`` keeps each stage's
    weights at its first step, ``on_step(stage, n)`` is called before every step."""
    calls = {} if calls is None else calls
    seen = {} if seen is None else seen

    def stage(name: str, steps: int, lr: float, init_seed: int) -> Stage:
        def make() -> StageParts:
            model = tiny_model(seed=init_seed)

            def step(m, batch):
                calls[name] = calls.get(name, 0) + 1
                if calls[name] == 1:
                    seen[name] = {k: v.detach().clone() for k, v in m.state_dict().items()}
                if on_step is not None:
                    on_step(name, calls[name])
                return noisy_step(m, batch)

            cfg = tiny_config(None, steps=steps, ckpt_every=4, warmup_steps=2, seed=5)
            return StageParts(model, step, tiny_data(), torch.optim.Adam(model.parameters(), lr=lr), cfg)

        return Stage(name, make)

    return [stage("first", 10, 0.02, 7), stage("second", 12, 0.01, 8)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file, or of a run directory's newest verified checkpoint."""
    return load_checkpoint(path)["model"]


def names(run_dir: Path) -> list[str]:
    return [p.name for p in find_checkpoints(run_dir)]


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_script(script: Path, *args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=ENV if env is None else env,
                          capture_output=True, text=True, timeout=timeout)


def run_worker(mode: str, out: Path) -> subprocess.CompletedProcess:
    return run_script(HERE, mode, str(out))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item()}"


def assert_trained(w: dict[str, torch.Tensor], dropout: float = 0.2) -> None:
    """The weights moved away from the initialisation (a comparison is between trained weights)."""
    init = tiny_model(dropout).state_dict()
    assert sum((w[k] - init[k]).abs().sum() for k in init) > 0.1


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    run_tiny(out)
    assert names(out) == ["step_00000028.pt", "step_00000030.pt"]  # keep_checkpoints=2 by default
    w = weights(out)
    assert_trained(w)
    return w


# ------------------------------------------------------------------------------------------------------- faults


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, reference):
    killed = run_worker("kill_in_step", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert names(tmp_path) == ["step_00000014.pt", "step_00000021.pt"]
    state = load_checkpoint(tmp_path)
    assert state["step"] == 21 and state["step"] % state["steps_per_epoch"] == 5  # mid-epoch: the data position
    with pytest.warns(UserWarning, match="taking over the lock left by pid [0-9]+ on .*no longer running"):
        model, result = run_tiny(tmp_path, resume=True)  # the killed process never released its lock file
    assert result.step == STEPS and result.history[0]["step"] == 1 and len(result.history) == STEPS
    assert names(tmp_path) == ["step_00000028.pt", "step_00000030.pt"]
    assert_same_weights(weights(tmp_path), reference)
    assert_same_weights(model.state_dict(), reference)
    assert logged_steps(tmp_path) == list(range(1, STEPS + 1))  # the killed run's unsaved steps re-logged once


def test_kill_during_checkpoint_write_keeps_latest_readable(tmp_path, reference):
    killed = run_worker("kill_in_save", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stale = list(tmp_path.glob(".step_00000021.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 1000  # the process really died halfway through a write
    with pytest.raises(CheckpointError, match="corrupt"):  # the half-written file is not a checkpoint
        ck.read_checkpoint(stale[0])
    assert names(tmp_path) == ["step_00000007.pt", "step_00000014.pt"]
    assert load_checkpoint(tmp_path)["step"] == 14  # the previous checkpoint, complete
    with pytest.warns(UserWarning, match="taking over the lock"):
        run_tiny(tmp_path, resume=True)
    assert not list(tmp_path.glob(".step_*.tmp"))
    assert_same_weights(weights(tmp_path), reference)


class _FailingFile:
    """A file whose large write (the payload) stops halfway with ``OSError("disk full")``."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def write(self, data) -> int:
        if len(data) > 200:
            self.f.write(bytes(data[: len(data) // 2]))
            self.fail()
        return self.f.write(data)

    def fail(self) -> None:
        raise OSError("disk full")

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1, "w": torch.ones(300)}, ck.checkpoint_path(tmp_path, 1), keep=1)
    monkeypatch.setattr(ck, "open", lambda *a, **k: _FailingFile(open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(300)}, ck.checkpoint_path(tmp_path, 2), keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.pt"]  # no temporary file, nothing pruned
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(300))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    calls, poisoned_x = {"n": 0}, []

    def poisoned(model, batch):
        calls["n"] += 1
        out = plain_step(model, batch)
        if calls["n"] == 13:
            poisoned_x.append(batch[0])
            out["loss"] = out["loss"] * float("nan")
        return out

    data = tiny_data()
    with pytest.raises(NonFiniteLossError) as err:
        run_tiny(tmp_path, step_fn=poisoned, data=data)
    (x,) = poisoned_x
    items = [int((data.tensors[0] == row).all(1).nonzero()) for row in x]  # the batch's items, found independently
    message = str(err.value)
    assert f"at step 13 on items {', '.join(map(str, items))};" in message
    assert f"the last verified checkpoint is {tmp_path / 'step_00000007.pt'} (step 7)" in message
    assert names(tmp_path) == ["step_00000007.pt"]  # the step-14 checkpoint (after the NaN) was not written
    state = load_checkpoint(tmp_path)
    assert state["step"] == 7 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert logged_steps(tmp_path) == list(range(1, 13))
    _, result = run_tiny(tmp_path, step_fn=plain_step, resume=True)  # training can continue from it
    assert [h["step"] for h in result.history] == list(range(1, STEPS + 1)) and result.step == STEPS


# ---------------------------------------------------------------------------------------------------- the engine


def test_resume_in_process_with_fp16_scaler_is_exact(tmp_path):
    _, straight = run_tiny(tmp_path / "a", precision="fp16", schedule="constant", ckpt_every=5)
    run_tiny(tmp_path / "b", precision="fp16", schedule="constant", ckpt_every=5, steps=12)
    assert names(tmp_path / "b") == ["step_00000010.pt", "step_00000012.pt"]
    scaler = load_checkpoint(tmp_path / "b")["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # the scaler really was in use and saved
    _, resumed = run_tiny(tmp_path / "b", precision="fp16", schedule="constant", ckpt_every=5, resume=True)
    assert straight.precision == "fp16" and resumed.precision == "fp16"
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert_trained(weights(tmp_path / "a"))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_history_jsonl_and_schedule(tmp_path):
    _, result = run_tiny(tmp_path, step_fn=plain_step, log_every=7)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == result.history and len(rows) == STEPS
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for i, row in enumerate(rows):  # warm-up 3 steps, then cosine from 1 to 0 over the remaining 27
        expect = (i + 1) / 3 if i < 3 else 0.5 * (1 + math.cos(math.pi * (i - 3) / (STEPS - 3)))
        assert row["lr"] == pytest.approx(0.02 * expect)
    fig = result.figure()
    assert list(fig.data[0].x) == list(range(1, STEPS + 1))
    assert list(fig.data[0].y) == [r["loss"] for r in rows]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert result.checkpoint == tmp_path / "step_00000030.pt" and result.world_size == 1
    assert "global batch 6 = 1 process(es) x 1 accumulation step(s) x micro-batch 6" in result.batch_plan


LIVE_PLOT_CELL = """
import time
import torch
from avlib.engine import TrainConfig, fit

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
    run_tiny(None, step_fn=plain_step, steps=2, live_plot=True)  # ... and the same patch sees it when asked for
    assert shown


def test_compiled_model_trains_and_checkpoints_plain_weights(tmp_path):
    # The "eager" backend runs TorchDynamo's capture without code generation: the engine's compile path, fast.
    compiled, _ = run_tiny(tmp_path / "c", step_fn=plain_step, compile="eager", steps=6, dropout=0.0)
    plain, _ = run_tiny(tmp_path / "p", step_fn=plain_step, steps=6, dropout=0.0)
    saved = weights(tmp_path / "c")
    assert saved.keys() == plain.state_dict().keys()  # no "_orig_mod." prefixes
    assert type(compiled) is nn.Sequential  # fit trains the model it was given, not a wrapper
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(saved[k], v)
    assert not torch.equal(saved["0.weight"], tiny_model(0.0).state_dict()["0.weight"])


def test_lr_schedules():
    def lr(step, **kw):
        return lr_multiplier(step, 10, **kw)

    assert [lr(s, schedule="step", milestones=(4, 8), gamma=0.5) for s in range(10)] == [1] * 4 + [0.5] * 4 + [0.25] * 2
    assert lr(0, schedule="linear", min_lr_ratio=0.1) == 1
    assert lr(5, schedule="linear", min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr(10, schedule="linear", min_lr_ratio=0.1) == pytest.approx(0.1)
    assert [lr(s, schedule="constant", warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    cos = [lr(s, schedule="cosine", warmup_steps=2, min_lr_ratio=0.2) for s in range(11)]
    assert cos[:2] == [0.5, 1.0] and cos[2] == pytest.approx(1.0) and cos[10] == pytest.approx(0.2)
    assert cos[6] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    cfg = TrainConfig(steps=10, schedule="cosine", warmup_steps=2, min_lr_ratio=0.2)
    assert [lr_multiplier(s, **cfg.schedule_kwargs()) for s in range(11)] == cos


def test_precision_choice_and_autocast(monkeypatch):
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            flags.update(line.split(":")[1].split())
    if flags & {"amx_bf16", "avx512_bf16"}:
        assert precision_mod.cpu_has_native_bf16()
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("fp16", cpu) == "fp16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", cpu)

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
    layouts, sizes = [], []

    def step(m, batch):
        x, y = batch
        layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        sizes.append(len(x))
        return {"loss": 100 * nn.functional.cross_entropy(m(x), y)}

    cfg = TrainConfig(steps=1, channels_last=True, clip_grad=1e-3, precision="fp32", progress=False)
    result = fit(model, step, data, torch.optim.SGD(model.parameters(), lr=1.0), cfg)
    assert layouts == [True] and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert sizes == [4]  # the DataLoader's batch size is the global batch when batch_size is not given
    assert result.history[0]["grad_norm"] > 1e-3  # the raw gradient was larger than the clip ...
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert change.norm().item() == pytest.approx(1e-3, rel=1e-3)  # ... and the SGD step has exactly the clipped norm


class _Stream(IterableDataset):
    def __iter__(self):
        yield from tiny_data()


def test_bad_inputs_have_clear_errors(tmp_path):
    for bad, match in [(dict(precision="fp8"), "precision must be one of"), (dict(steps=0), "steps must be >= 1"),
                       (dict(schedule="exp"), "schedule must be one of"), (dict(clip_grad=0.0), "clip_grad"),
                       (dict(micro_batch=0), "micro_batch must be >= 1"), (dict(keep_checkpoints=0), "keep_")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**{"steps": 1, **bad})
    with pytest.raises(ValueError, match="48 items, fewer than one global batch of 100"):
        run_tiny(None, batch_size=100)
    with pytest.raises(ValueError, match="batch_size .the global batch. is required"):
        run_tiny(None, batch_size=None)
    with pytest.raises(TypeError, match="map-style Dataset"):
        run_tiny(None, data=_Stream())
    with pytest.raises(CheckpointError, match="not found: .*nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt is not an avlib checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'loss' is a scalar tensor"):
        run_tiny(None, step_fn=lambda m, b: {"loss": m(b[0])}, steps=1)
    path = save_checkpoint({"model": tiny_model().state_dict(), "meta": {"method": "l3", "scale": "quick"}},
                           tmp_path / "step_00000001.pt")
    mismatch = (r"holds a l3 model at scale quick that does not fit this Sequential: 4 missing, 2 unexpected and 2 "
                r"differently shaped tensors \(first: 0.weight\)")
    with pytest.raises(CheckpointError, match=mismatch):
        load_checkpoint(path, model=nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(1, 1)))


# ----------------------------------------------------------------------------------------------- worker entry point


class _HalfThenDie(_FailingFile):
    """A file that dies (SIGKILL) halfway through its large write: the payload of a checkpoint."""

    def fail(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


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
        opened = {"n": 0}

        def open_dying_on_third(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if "w" in mode:
                opened["n"] += 1
                if opened["n"] == 3:  # the checkpoint of step 21
                    return _HalfThenDie(f)
            return f

        ck.open = open_dying_on_third
        run_tiny(out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
