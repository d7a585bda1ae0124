"""Audio frontends against independent numpy / scipy computations of the same definitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from avlib.audio import (
    CAVLLogFrequency,
    DMCLogMel,
    DSOLLogMel,
    L3LogSpectrogram,
    VGGishLogMel,
    example_samples,
    first_example,
    make_frontend,
)


def _noise(n: int, seed: int = 0, batch: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
    return (tone[None] + 0.05 * rng.standard_normal((batch, n))).astype(np.float32)


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(B, N) → (B, T, length) frames starting at multiples of hop (no padding)."""
    n_frames = 1 + (x.shape[-1] - length) // hop
    idx = np.arange(length)[None, :] + hop * np.arange(n_frames)[:, None]
    return x[:, idx]


def _stft_mag(x: np.ndarray, win: int, hop: int, n_fft: int) -> np.ndarray:
    """(B, N) → (B, T, n_fft // 2 + 1) magnitude of periodic-Hann windowed frames, zero-padded at the end to n_fft."""
    window = scipy.signal.get_window("hann", win, fftbins=True)
    return np.abs(np.fft.rfft(_frames(x.astype(np.float64), win, hop) * window, n=n_fft))


def _vggish_reference(x: np.ndarray, n_mels: int = 64, example_frames: int = 96) -> np.ndarray:
    mag = _stft_mag(x, 400, 160, 512)
    hz = np.linspace(0, 8000, 257)
    mel = 1127.0 * np.log(1.0 + hz / 700.0)
    edges = np.linspace(1127.0 * np.log(1 + 125 / 700), 1127.0 * np.log(1 + 7500 / 700), n_mels + 2)
    weights = np.zeros((257, n_mels))
    for i in range(n_mels):  # one triangle per band, linear in mel
        lo, c, hi = edges[i : i + 3]
        for k in range(1, 257):  # DC bin stays 0
            weights[k, i] = max(0.0, min((mel[k] - lo) / (c - lo), (hi - mel[k]) / (hi - c)))
    log_mel = np.log(mag @ weights + 0.01)  # (B, T, n_mels)
    n_ex = (log_mel.shape[1] - example_frames) // example_frames + 1
    return np.stack([log_mel[:, e * example_frames : (e + 1) * example_frames] for e in range(n_ex)], 1)


def _slaney_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _slaney_mel_inv(m: np.ndarray) -> np.ndarray:
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0)
    return np.where(m >= 15.0, log, lin)


def _dsol_reference(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x.astype(np.float64), ((0, 0), (80, 80)))
    mag = _stft_mag(padded, 160, 80, 160)  # (B, T, 81)
    fft_hz = np.linspace(0, 8000, 81)
    pts = _slaney_mel_inv(np.linspace(_slaney_mel(0.0), _slaney_mel(8000.0), 66))
    weights = np.zeros((64, 81))
    for i in range(64):
        lower = (fft_hz - pts[i]) / (pts[i + 1] - pts[i])
        upper = (pts[i + 2] - fft_hz) / (pts[i + 2] - pts[i + 1])
        weights[i] = np.maximum(0, np.minimum(lower, upper)) * 2.0 / (pts[i + 2] - pts[i])
    mel = mag @ weights.T  # (B, T, 64)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80.0)[:, None]


def test_vggish_matches_numpy_reference_and_frames_examples():
    x = _noise(16000 * 2 + 500)
    ours = VGGishLogMel()(torch.from_numpy(x)).numpy()
    ref = _vggish_reference(x)
    assert ours.shape == (2, 2, 96, 64) == ref.shape  # 2.03 s -> 201 frames -> two whole 96-frame examples
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_vggish_one_second_shape_and_minimum_length():
    assert VGGishLogMel()(torch.zeros(3, 16000)).shape == (3, 1, 96, 64)
    assert VGGishLogMel()(torch.zeros(1, 15600)).shape == (1, 1, 96, 64)  # 0.975 s is the shortest clip
    with pytest.raises(ValueError, match="15600 samples"):
        VGGishLogMel()(torch.zeros(1, 15599))


def test_dmc_variant_496_frames_matches_reference():
    x = _noise(79600, seed=1, batch=1)
    ours = DMCLogMel()(torch.from_numpy(x)).numpy()
    assert ours.shape == (1, 1, 496, 64)
    np.testing.assert_allclose(ours, _vggish_reference(x, example_frames=496), atol=2e-4, rtol=1e-4)


def test_dsol_matches_numpy_librosa_style_reference():
    x = _noise(16000, seed=2)
    ours = DSOLLogMel()(torch.from_numpy(x)).numpy()
    ref = _dsol_reference(x)
    assert ours.shape == (2, 1, 201, 64) == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


def test_l3_log_spectrogram_matches_reference():
    x = np.repeat(_noise(16000, seed=3), 3, axis=1)[:, :48000]  # a 1 s clip at 48 kHz
    ours = L3LogSpectrogram()(torch.from_numpy(x)).numpy()
    ref = np.log(_stft_mag(x, 480, 240, 512) + 1e-6).transpose(0, 2, 1)[:, None]
    assert ours.shape == (2, 1, 257, 199) == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


def test_cavl_log_frequency_matches_reference():
    n = 110250  # 10 s at 11.025 kHz
    x = _noise(n, seed=4, batch=1)
    ours = CAVLLogFrequency()(torch.from_numpy(x)).numpy()
    assert ours.shape == (1, 1, 512, 432)
    padded = np.pad(x.astype(np.float64), ((0, 0), (511, 511 + (-n) % 256)))
    mag = _stft_mag(padded, 1022, 256, 1022)[0]  # (T, 512)
    pos = (21.0 ** np.linspace(0, 1, 512) - 1.0) / 20.0 * 511  # Sound of Pixels' log-frequency grid, DC ... Nyquist
    warped = np.stack([np.interp(pos, np.arange(512), frame) for frame in mag], 1)  # (512, T)
    np.testing.assert_allclose(ours[0, 0], np.log(warped + 1e-6), atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("frontend, n", [(L3LogSpectrogram(), 48000), (VGGishLogMel(), 16000),
                                         (DSOLLogMel(), 16000), (CAVLLogFrequency(), 11025)])
def test_silence_is_finite(frontend, n):
    out = frontend(torch.zeros(2, n))
    assert torch.isfinite(out).all()
    assert torch.unique(out).numel() == 1  # constant floor, no -inf


def test_stereo_is_downmixed_and_batch_independent():
    x = torch.from_numpy(_noise(16000, seed=5, batch=4)).reshape(2, 2, 16000)
    fe = VGGishLogMel()
    torch.testing.assert_close(fe(x), fe(x.mean(1)))
    single = fe(x.mean(1)[1:2])
    torch.testing.assert_close(fe(x.mean(1))[1:2], single)  # no batch-level state


def test_other_float_dtypes_are_computed_in_float32():
    x = torch.from_numpy(_noise(16000, seed=6))
    ref = VGGishLogMel()(x)
    torch.testing.assert_close(VGGishLogMel()(x.double()), ref)
    assert VGGishLogMel()(x.half()).dtype == torch.float32


def test_wrong_rate_is_resampled():
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 1000 * t)[None]  # 1 kHz at 16 kHz
    spec = L3LogSpectrogram(input_sample_rate=16000)(tone)
    assert spec.shape == (1, 1, 257, 199)
    peak_hz = spec[0, 0].mean(-1).argmax().item() * 24000 / 256
    assert abs(peak_hz - 1000) < 100


@pytest.mark.parametrize("bad, err", [
    (torch.zeros(2, 2, 2, 16000), ValueError),
    (torch.zeros(2, 16000, dtype=torch.int16), TypeError),
    (torch.full((1, 16000), float("nan")), ValueError),
])
def test_bad_waveforms_raise_clear_errors(bad, err):
    with pytest.raises(err, match="VGGishLogMel"):
        VGGishLogMel()(bad)


def test_too_short_for_l3_names_minimum():
    with pytest.raises(ValueError, match="at least 480 samples"):
        L3LogSpectrogram()(torch.zeros(1, 100))


def test_make_frontend_from_config_dicts():
    from avlib.methods import get_method

    quick = make_frontend(get_method("dmc").config("quick").audio)
    assert quick(torch.zeros(2, 16000)).shape == (2, 1, 96, 32)
    full = make_frontend(get_method("cavl").config("full").audio)
    assert full(torch.zeros(1, 110250)).shape == (1, 1, 512, 432)
    with pytest.raises(ValueError, match="frontend"):
        make_frontend({"frontend": "nope"})


def test_first_example_is_the_first_vggish_example_in_float32_outside_autocast():
    fe = VGGishLogMel()
    x = torch.from_numpy(_noise(16000 * 2 + 500, seed=7))
    want = torch.from_numpy(_vggish_reference(x.numpy()))[:, :1].float()  # (B, 1, 96, 64): the first of two examples
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = first_example(fe, x)
    assert got.dtype == torch.float32 and got.shape == (2, 1, 96, 64)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    single = L3LogSpectrogram()
    torch.testing.assert_close(first_example(single, torch.zeros(1, 48000)), single(torch.zeros(1, 48000)))


def test_example_samples_is_the_configs_seconds_else_the_frontends_minimum():
    assert example_samples(VGGishLogMel(), {"frontend": "vggish_logmel"}) == 15600  # one 0.975 s example
    assert example_samples(DMCLogMel(), {"frontend": "dmc_logmel"}) == 495 * 160 + 400
    assert example_samples(CAVLLogFrequency(), {"seconds": 10.0}) == 110250
    assert example_samples(VGGishLogMel(), {"seconds": 0.5}) == 8000
