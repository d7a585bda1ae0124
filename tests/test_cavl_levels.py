"""CAVL's curriculum as stages (§3.2.1, §4.2): k_a = level and k_v = level + 1, lr x0.1 per level, each level started
from the previous one's weights, in a run directory and in memory alike; and CAVL-C0 (Table 2), scene-level
alignment on the C1 scenes without clustering."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avlib.audio import first_example, make_frontend
from avlib.engine import load_checkpoint
from avlib.engine.checkpoint import seed_everything
from avlib.methods import get_method, train

CAVL = get_method("cavl")


def test_each_level_has_its_sources_clusters_data_and_lr():
    full = CAVL.stages(CAVL.config("full"))
    assert [p.name for p in full] == ["c1", "c2", "c3", "c4"]
    assert [p.cfg.lr for p in full] == pytest.approx([1e-4, 1e-5, 1e-6, 1e-7])  # §4.2: x0.1 per curriculum
    assert all(p.cfg.optimizer == "adam" and not p.cfg.scene_level for p in full)
    plans = CAVL.stages(CAVL.config("quick", levels=(0, 1, 2, 3, 4)))
    assert [p.name for p in plans] == ["c0", "c1", "c2", "c3", "c4"]
    assert [p.cfg.data["family"] for p in plans] == ["c1", "c1", "c2", "c3", "c4"]
    models = [CAVL.model(p.cfg) for p in plans]
    assert [(m.k_audio, m.k_visual, m.scene_level) for m in models] == [
        (1, 1, True), (1, 2, False), (2, 3, False), (3, 4, False), (4, 5, False)]  # footnote 2: k_v = k_a + 1
    lr = CAVL.config("quick").lr
    assert [p.cfg.lr for p in plans] == pytest.approx([lr * 0.1**i for i in range(5)])
    with pytest.raises(ValueError, match="curriculum levels"):
        CAVL.stages(CAVL.config("quick", levels=(1, -1)))


def test_scene_level_alignment_compares_the_mean_embeddings():
    cfg = CAVL.stages(CAVL.config("quick", levels=(0,)))[0].cfg
    torch.manual_seed(0)
    model = CAVL.model(cfg).eval()
    batch = CAVL.example_batch(cfg, 3)
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    with torch.no_grad():
        out = model(batch["image"], spec)
        va = model.fc_a(model.audio(spec).flatten(2).transpose(1, 2)).mean(1)  # (B, D): the whole sound
        vv = model.fc_v(model.visual(batch["image"]).flatten(2).transpose(1, 2)).mean(1)  # the whole image
        res = CAVL.step(cfg)(model, batch, generator=torch.Generator().manual_seed(1))
    assert out["centers_a"].shape == (3, 1, cfg.embed_dim) and out["centers_v"].shape == (3, 1, cfg.embed_dim)
    assert torch.allclose(out["centers_a"][:, 0], va, atol=1e-5) and torch.allclose(out["centers_v"][:, 0], vv,
                                                                                     atol=1e-5)
    assert torch.all(out["assign_v"] == 1) and out["visual_map"].shape[1] == 1
    s_pos = (va - vv).norm(dim=1)  # Eq. 4 with one center each: the distance of the two scene vectors
    assert float(res["s_pos"]) == pytest.approx(float(s_pos.mean()), rel=1e-4)


def tiny(**changes):
    cfg = CAVL.config("quick")
    return cfg.replace(**{"data": {**cfg.data, "size": 8}, "eval_size": 4, "batch_size": 4, "steps": 2, **changes})


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_each_level_starts_from_the_previous_one(tmp_path: Path):
    """With the lr of levels 2 and 3 at 0, the last level's weights are the first level's trained ones: each level
    was initialised from the one before (not from scratch, which the seed would give). The run directory and the
    in-memory route train the same curriculum."""
    torch.set_num_threads(1)
    cfg = tiny(levels=(1, 2, 3), level_lr_decay=0.0)
    run = train(cfg, seed=0, out=tmp_path / "run", progress=False, evaluate=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["1_c1", "2_c2", "3_c3"]
    assert [h["lr"] for h in run.history] == pytest.approx([cfg.lr] * 2 + [0.0] * 4)
    assert (run.model.k_audio, run.model.k_visual) == (3, 4)
    first = load_checkpoint(tmp_path / "run" / "1_c1")
    trained = {k: first["model"][k] for k in _params(run.model)}
    assert all(torch.equal(v, trained[k]) for k, v in _params(run.model).items())
    seed_everything(0)
    fresh = _params(CAVL.model(CAVL.stages(cfg)[2].cfg))
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.items())
    in_memory = train(cfg, seed=0, progress=False, evaluate=False)
    assert all(torch.equal(v, trained[k]) for k, v in _params(in_memory.model).items())


def test_c0_then_c1_trains_through_the_route(tmp_path: Path):
    torch.set_num_threads(1)
    cfg = tiny(levels=(0, 1), steps=1)
    run = train(cfg, seed=0, out=tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["1_c0", "2_c1"]
    assert [h["lr"] for h in run.history] == pytest.approx([cfg.lr, cfg.lr * 0.1])
    assert not run.model.scene_level and run.model.k_visual == 2 and run.scores["clips"] == 4
