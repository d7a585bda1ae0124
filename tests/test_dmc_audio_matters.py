"""DMC and the sound: the visual maps never hear it, and the agreement scores are the ones the rules use.

Chapter 1 (section 1.8) relies on both: a negative sound can change only which center is called related, and the
model's own agreement (``DMC.agreement``) is what could tell a real sound from a negative one.
"""

import torch
import torch.nn.functional as F

from avlib.eval.localization import negative_audio
from avlib.losses import dmc_center_similarity
from avlib.methods import get_method

DMC = get_method("dmc")


def _outputs(b: int = 5, k: int = 3, m: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"centers_a": torch.randn(b, k, m, generator=g), "centers_v": torch.randn(b, k, m, generator=g)}


def test_agreement_is_the_rules_own_score():
    out = _outputs()
    cfg = DMC.config("quick")
    agree = DMC.agreement(out)
    assert torch.allclose(agree["cosine"], dmc_center_similarity(out["centers_a"], out["centers_v"]))
    assert torch.allclose(agree["contrast"], DMC.center_scores(cfg, out, "contrast"), atol=1e-6)


def test_agreement_against_reference_sounds_matches_a_loop():
    real, neg = _outputs(seed=0), _outputs(seed=1)
    neg["centers_v"] = real["centers_v"]  # the same images, other sounds
    got = DMC.agreement(neg, reference=real)["contrast"]
    b, k = got.shape
    for v in range(b):
        for j in range(k):
            cv = real["centers_v"][v, j]
            own = F.cosine_similarity(neg["centers_a"][v, j], cv, dim=0)
            others = [F.cosine_similarity(real["centers_a"][a, j], cv, dim=0) for a in range(b) if a != v]
            assert torch.isclose(got[v, j], own - torch.stack(others).mean(), atol=1e-6)


def test_visual_maps_do_not_depend_on_the_sound():
    torch.manual_seed(0)
    cfg = DMC.config("quick")
    model = DMC.model(cfg)
    batch = DMC.example_batch(cfg, 3)
    out = DMC.forward(cfg, model, batch)
    for kind in ("silence", "noise"):
        other = DMC.forward(cfg, model, {**batch, "audio": negative_audio(batch["audio"], kind)})
        assert torch.equal(other["visual_map"], out["visual_map"])
        assert torch.equal(other["centers_v"], out["centers_v"])
        assert not torch.allclose(other["centers_a"], out["centers_a"])  # the sound did reach the audio side
    # so the audio-free rule cannot change with the sound, while the contrast rule may
    free = DMC.localize(cfg, out, "image")["related_index"]
    silent = DMC.forward(cfg, model, {**batch, "audio": torch.zeros_like(batch["audio"])})
    assert torch.equal(DMC.localize(cfg, silent, "image")["related_index"], free)
