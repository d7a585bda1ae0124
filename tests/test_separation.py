"""Visually guided separation (CAVL §3.3.2, supplement §6.4): the STFT round trip and log-frequency warp, the masks,
BSS Eval against mir_eval, and the ``separation`` method (full-scale shapes and step, a short quick run)."""

from __future__ import annotations

import math
import warnings

import mir_eval
import numpy as np
import pytest
import torch

from avlib.audio import CAVLLogFrequency, SeparationSTFT, inverse_log_frequency_matrix, log_frequency_matrix
from avlib.eval.separation import binary_mask, bss_scores, ideal_estimates, mixture_pairs, ratio_mask
from avlib.methods import get_method, train
from avlib.methods.separation import FULL, guide_vectors, pair_partners
from avlib.nets.cavl import CAVLNet


def tones(n: int, sample_rate: int, freqs: tuple[float, ...], seed: int = 0) -> torch.Tensor:
    """``(len(freqs), n)`` decaying harmonic tones with a little noise (distinct, separable sources)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sample_rate
    out = [sum(torch.sin(2 * math.pi * f * h * t) / h for h in range(1, 6)) * torch.exp(-t * (1 + i))
           + 0.01 * torch.randn(n, generator=g) for i, f in enumerate(freqs)]
    return 0.2 * torch.stack(out)


def test_inverse_log_frequency_matrix_inverts_the_warp_grid():
    n_lin, n_log, base = 512, 512, 21.0
    warp, unwarp = log_frequency_matrix(n_lin, n_log, base), inverse_log_frequency_matrix(n_lin, n_log, base)
    assert unwarp.shape == (n_lin, n_log)
    assert torch.allclose(unwarp.sum(1), torch.ones(n_lin))
    k = torch.arange(n_lin, dtype=torch.float64)
    pos_log = (n_log - 1) * torch.log1p(k / (n_lin - 1) * (base - 1)) / math.log(base)  # where bin k sits
    assert torch.allclose(unwarp.double() @ torch.arange(n_log, dtype=torch.float64), pos_log, atol=1e-4)
    # a smooth spectrum survives warp then inverse warp (the top octaves are coarser on the log grid)
    smooth = torch.cos(k / 90.0).float() + 2
    back = unwarp @ (warp @ smooth)
    assert (back - smooth).abs().max() < 2e-3
    with pytest.raises(ValueError, match="base"):
        inverse_log_frequency_matrix(8, 8, base=1.0)


@pytest.mark.parametrize(("n_fft", "hop", "bins", "seconds"), [(1022, 256, 512, 10.0), (510, 256, 64, 1.0)])
def test_stft_round_trip_and_the_cavl_frontend(n_fft, hop, bins, seconds):
    stft = SeparationSTFT(11025, n_fft, hop, bins)
    wave = tones(round(11025 * seconds), 11025, (220.0, 330.0))
    spec = stft.stft(wave)
    assert spec.shape == (2, n_fft // 2 + 1, 1 + math.ceil(wave.shape[-1] / hop)) and spec.is_complex()
    assert (stft.istft(spec, wave.shape[-1]) - wave).abs().max() < 1e-5
    assert torch.allclose(stft.log_input(spec.abs()), CAVLLogFrequency(11025, n_fft, hop, bins)(wave), atol=1e-5)
    ones = torch.ones(2, bins, spec.shape[-1])  # a mask of ones, warped back, gives the mixture back
    assert (stft.apply_mask(ones, spec, wave.shape[-1]) - wave).abs().max() < 1e-5
    if n_fft == 1022:
        assert stft.log_input(spec.abs()).shape == (2, 1, 512, 432)  # CAVL's 10 s spectrogram
    with pytest.raises(ValueError, match="length"):
        stft.istft(spec, 10 * wave.shape[-1])


def test_resampled_input_stays_in_the_band():
    stft = SeparationSTFT(11025, 510, 128, 64, input_sample_rate=16000)
    wave = stft.prepare(tones(16000, 16000, (440.0,)))
    assert wave.shape == (1, 11025)
    mag = stft.stft(wave).abs()[0].mean(1)
    assert int(mag.argmax()) == round(440 / (11025 / 510))  # the fundamental's bin at the new rate


def test_masks_by_hand():
    own = torch.tensor([0.0, 1.0, 3.0, 2.0])
    mix = torch.tensor([0.0, 2.0, 2.0, 4.0])  # bin 2: phases cancel, |A| > |A_mix|
    assert torch.allclose(ratio_mask(own, mix), torch.tensor([0.0, 0.5, 1.0, 0.5]), atol=1e-6)
    other = torch.tensor([0.0, 2.0, 1.0, 2.0])
    assert binary_mask(own, other).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_pair_partners():
    g = torch.Generator().manual_seed(0)
    p = pair_partners(8, g)
    assert sorted(p.tolist()) == list(range(8)) and torch.equal(p[p], torch.arange(8))
    assert (p != torch.arange(8)).all()
    p = pair_partners(5, g)
    assert (p != torch.arange(5)).all() and sum(int(p[p[i]] == i) for i in range(5)) >= 3
    with pytest.raises(ValueError, match="at least 2"):
        pair_partners(1)


def test_mixture_pairs_mix_different_categories():
    assert mixture_pairs(torch.tensor([0, 0, 1, 2, 2, 3])).tolist() == [[0, 2], [1, 3], [4, 5]]
    assert mixture_pairs(torch.tensor([-1, -1])).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="different categories"):
        mixture_pairs(torch.tensor([1, 1, 1]))


def test_bss_scores_agree_with_mir_eval_on_separation_outputs():
    """The bounds' estimates and the mixture, scored by avlib (BSS Eval v3, batched) and by mir_eval."""
    stft = SeparationSTFT(11025, 510, 128, 64)
    sources = torch.stack([tones(5513, 11025, (196.0, 523.0), seed=0), tones(5513, 11025, (130.0, 311.0), seed=1)])
    est = ideal_estimates(stft, sources)
    assert set(est) == {"mixture", "ideal_ratio", "ideal_binary"}
    for name, e in est.items():
        ours = bss_scores(e, sources, chunk=1)
        want = {"sdr": [], "sir": [], "sar": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mir_eval 0.8 deprecates bss_eval_sources
            for m in range(2):
                sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(sources[m].double().numpy(),
                                                                         e[m].double().numpy(), False)
                want["sdr"].append(sdr), want["sir"].append(sir), want["sar"].append(sar)
        for key, values in want.items():
            assert ours[key] == pytest.approx(float(np.mean(values)), abs=1e-3), (name, key)
    scores = {name: bss_scores(e, sources)["sdr"] for name, e in est.items()}
    assert scores["ideal_ratio"] > scores["mixture"] + 5  # the upper bound is far above the lower one


def test_full_config_is_the_paper():
    assert FULL.encoder_channels == (16, 32, 64, 128, 256, 512) and FULL.visual_channels == 512
    assert (FULL.sample_rate, FULL.n_fft, FULL.hop_length, FULL.freq_bins, FULL.seconds) == (11025, 1022, 256, 512,
                                                                                              10.0)
    assert FULL.cavl.embed_dim == 512 and FULL.visual == "mask" and FULL.init_from == "cavl"
    m = get_method("separation")
    assert m.config("quick", visual="constant").init_from is None
    assert m.config("quick", visual="center").init_from == "cavl"
    with pytest.raises(ValueError, match="init_from"):
        FULL.replace(visual="constant")
    with pytest.raises(ValueError, match="mask_target"):
        FULL.replace(mask_target="soft")


def test_full_scale_shapes_and_one_training_step_at_batch_2():
    m = get_method("separation")
    torch.manual_seed(0)
    model = m.model(FULL)
    assert model.unet.visual_dim == 512 and model.guide.representation == "mask"
    seen = {}
    model.unet.encoder[-1].register_forward_hook(lambda mod, a, out: seen.__setitem__("bottleneck", out.shape))
    model.unet.decoder[0].register_forward_hook(lambda mod, a, out: seen.__setitem__("concat", a[0].shape))
    model.register_forward_hook(lambda mod, a, out: seen.update(input=a[0].shape, output=out["logits"].shape))
    batch = m.example_batch(FULL, 2)
    assert batch["audio"].shape == (2, 110250) and batch["image"].shape == (2, 3, 256, 256)
    cavl_before = {k: v.clone() for k, v in model.guide.cavl.state_dict().items()}
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    opt = m.make_optimizer(FULL, model)
    out = m.step(FULL)(model, batch)
    out["loss"].backward()
    opt.step()
    assert seen["input"] == (2, 1, 512, 432) and seen["output"] == (2, 1, 512, 432)
    assert seen["bottleneck"] == (2, 512, 8, 7) and seen["concat"] == (2, 1024, 8, 7)
    assert torch.isfinite(out["loss"]) and 0 < float(out["loss"].detach()) < 1
    assert all(torch.equal(v, model.guide.cavl.state_dict()[k]) for k, v in cavl_before.items())  # frozen
    assert any(not torch.equal(v, model.unet.state_dict()[k]) for k, v in unet_before.items())


@pytest.mark.parametrize("visual", ["constant", "mask"])
def test_quick_run_trains_and_reports_bounds(visual):
    m = get_method("separation")
    cfg = m.config("quick", visual=visual, steps=2, batch_size=8, eval_size=8, mask_target="binary",
                   data={"family": "solo", "n_categories": 4, "size": 16, "image_size": 64, "duration": 1.0})
    source = None
    if visual != "constant":
        torch.manual_seed(1)
        source = get_method("cavl").model(cfg.cavl)
    run = train(cfg, seed=0, init_from=source, progress=False)
    scores = run.scores
    assert scores["mixtures"] == 4 and scores["visual"] == visual and scores["mask_target"] == "binary"
    for name in ("model", "mixture", "ideal_ratio", "ideal_binary"):
        assert set(scores[name]) == {"sdr", "sir", "sar"} and all(map(math.isfinite, scores[name].values()))
    assert scores["ideal_ratio"]["sdr"] > scores["mixture"]["sdr"] + 5
    if source is not None:  # the guide is the given CAVL net, unchanged by training
        assert all(torch.equal(v, run.model.guide.cavl.state_dict()[k]) for k, v in source.state_dict().items())
        assert 0.0 <= scores["guide_on_object"] <= 1.0
    else:
        assert "guide_on_object" not in scores


def test_init_refuses_what_is_not_the_cavl_net():
    m = get_method("separation")
    cfg = m.config("quick", visual="center")
    model = m.model(cfg)
    with pytest.raises(TypeError, match="trained CAVL network"):
        m.init(cfg, model, torch.nn.Linear(2, 2), None)
    other = CAVLNet(visual_cfg=(8, "M"), audio_cfg=(8, "M"), embed_dim=4)
    with pytest.raises(ValueError, match="does not fit separation"):
        m.init(cfg, model, other, None)


def test_guide_vectors_are_computed_once_per_item():
    m = get_method("separation")
    cfg = m.config("quick", visual="mask")
    torch.manual_seed(0)
    model = m.model(cfg)
    _, frontend = m.frontends(cfg)
    batch = {**m.example_batch(cfg, 4), "index": torch.tensor([3, 1, 0, 2])}
    cache = {}
    got = guide_vectors(model, batch, frontend, cache)
    assert torch.allclose(got, guide_vectors(model, batch, frontend), atol=1e-5) and sorted(cache) == [0, 1, 2, 3]
    other = {**batch, "image": torch.zeros_like(batch["image"])}  # cached items are read back, not recomputed
    assert torch.equal(guide_vectors(model, other, frontend, cache), got)
    first, second = m.step(cfg).keywords["guide_cache"], m.step(cfg).keywords["guide_cache"]
    assert first == {} and first is not second  # one cache per training run
    assert m.step(cfg.replace(visual="constant", init_from=None)).keywords["guide_cache"] is None
