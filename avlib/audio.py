"""Waveform → spectrogram frontends, one ``nn.Module`` per paper, built on ``torchaudio.transforms``.

Every frontend takes a batch of mono waveforms ``(B, N)`` (also ``(N,)``, or ``(B, C, N)`` which is down-mixed by
averaging the channels), resamples it when ``input_sample_rate`` differs from the paper's rate, and returns a batch of
one-channel maps. They hold their windows and filterbanks as buffers, so ``.to(device)`` moves them and the whole batch
is transformed on that device. Silent input gives finite outputs (every logarithm has a floor); a waveform too short for
one analysis frame (or one VGGish example) raises a ``ValueError`` that names the minimum length.

| class | paper | output for the reference input |
| --- | --- | --- |
| :class:`L3LogSpectrogram` | L3-Net, Objects that Sound | 1 s at 48 kHz → ``(B, 1, 257, 199)`` (freq × time) |
| :class:`VGGishLogMel` | VGGish (DMC's audio input) | 1 s at 16 kHz → ``(B, 1, 96, 64)`` (examples, time × mel) |
| :class:`DMCLogMel` | DMC | 4.975 s at 16 kHz → ``(B, 1, 496, 64)`` |
| :class:`DSOLLogMel` | DSOL | 1 s at 16 kHz → ``(B, 1, 201, 64)`` (time × mel) |
| :class:`CAVLLogFrequency` | CAVL | 10 s at 11.025 kHz → ``(B, 1, 512, 432)`` (log-frequency × time) |

:class:`SeparationSTFT` is CAVL's frontend with the way back, for mask-based separation (Sound of Pixels, CAVL §3.3.2):
the complex STFT, the log-frequency warp of magnitudes, the inverse warp of masks and the inverse STFT.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

__all__ = [
    "CAVLLogFrequency",
    "DMCLogMel",
    "DSOLLogMel",
    "L3LogSpectrogram",
    "SeparationSTFT",
    "VGGishLogMel",
    "hz_to_mel_htk",
    "inverse_log_frequency_matrix",
    "log_frequency_matrix",
    "make_frontend",
    "vggish_mel_matrix",
]


def hz_to_mel_htk(f: Tensor) -> Tensor:
    """HTK mel scale, ``1127 · ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(f / 700.0)


def vggish_mel_matrix(n_mels: int = 64, n_freqs: int = 257, sample_rate: int = 16000, f_min: float = 125.0,
                      f_max: float = 7500.0) -> Tensor:
    """``(n_freqs, n_mels)`` VGGish mel weights: triangles that are linear *in mel* between band edges spaced evenly on
    the HTK mel scale from ``f_min`` to ``f_max``; the DC bin gets weight 0 (as in VGGish's reference frontend)."""
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"vggish_mel_matrix: need 0 <= f_min < f_max <= sample_rate/2; got {f_min}, {f_max}")
    bins_mel = hz_to_mel_htk(torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64))
    edges = torch.linspace(hz_to_mel_htk(torch.tensor(f_min, dtype=torch.float64)).item(),
                           hz_to_mel_htk(torch.tensor(f_max, dtype=torch.float64)).item(), n_mels + 2,
                           dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights.to(torch.float32)


def log_frequency_matrix(n_in: int, n_out: int, base: float = 21.0) -> Tensor:
    """``(n_out, n_in)`` linear-interpolation weights that resample ``n_in`` linear-frequency bins (DC … Nyquist) onto
    ``n_out`` exponentially spaced positions ``p_j = (base^(j / (n_out - 1)) - 1) / (base - 1) · (n_in - 1)``.

    This is the log-frequency warp of Sound of Pixels (Zhao et al. 2018; its sampling grid uses base 21), the
    separation work CAVL builds on: low frequencies get more rows, the top bin stays at Nyquist. CAVL does not state
    its warp; this is our choice."""
    if n_in < 2 or n_out < 2:
        raise ValueError(f"log_frequency_matrix: need n_in, n_out >= 2; got {n_in}, {n_out}")
    if base <= 1:
        raise ValueError(f"log_frequency_matrix: base must be > 1; got {base}")
    grid = torch.linspace(0, 1, n_out, dtype=torch.float64)
    pos = ((torch.pow(torch.tensor(float(base), dtype=torch.float64), grid) - 1.0) / (base - 1.0) * (n_in - 1))
    pos = pos.clamp(0.0, n_in - 1.0)
    lo = pos.floor().long().clamp(max=n_in - 2)
    frac = pos - lo
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w[rows, lo] = 1.0 - frac
    w[rows, lo + 1] += frac
    return w.to(torch.float32)


def inverse_log_frequency_matrix(n_in: int, n_out: int, base: float = 21.0) -> Tensor:
    """``(n_in, n_out)`` linear-interpolation weights from the ``n_out`` log-spaced bins of
    :func:`log_frequency_matrix` back onto the ``n_in`` linear bins: linear bin ``k`` sits at the fractional log-bin
    position ``j(k) = (n_out - 1) · log(1 + k / (n_in - 1) · (base - 1)) / log(base)``, the inverse of ``p_j``, and
    takes the two log bins around it. This is how a mask predicted on the log-frequency grid is brought back to the
    STFT's bins (Sound of Pixels warps it back by resampling on the inverse grid)."""
    if n_in < 2 or n_out < 2:
        raise ValueError(f"inverse_log_frequency_matrix: need n_in, n_out >= 2; got {n_in}, {n_out}")
    if base <= 1:
        raise ValueError(f"inverse_log_frequency_matrix: base must be > 1; got {base}")
    k = torch.arange(n_in, dtype=torch.float64)
    pos = ((n_out - 1) * torch.log1p(k / (n_in - 1) * (base - 1.0)) / math.log(base)).clamp(0.0, n_out - 1.0)
    hat = 1.0 - (pos[:, None] - torch.arange(n_out, dtype=torch.float64)).abs()  # linear interpolation weights
    return hat.clamp(min=0.0).to(torch.float32)


class _Frontend(nn.Module):
    """Shared input handling: shape checks, down-mixing, resampling, minimum length."""

    def __init__(self, sample_rate: int, input_sample_rate: int | None, min_samples: int, name: str) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.input_sample_rate = int(input_sample_rate or sample_rate)
        self.min_samples = int(min_samples)
        self._name = name
        self.resample = (torchaudio.transforms.Resample(self.input_sample_rate, self.sample_rate)
                         if self.input_sample_rate != self.sample_rate else nn.Identity())

    def prepare(self, wave: Tensor) -> Tensor:
        """``(N,)``, ``(B, N)`` or ``(B, C, N)`` waveforms at ``input_sample_rate`` → float32 ``(B, N')`` at
        ``sample_rate``."""
        if not torch.is_tensor(wave) or not wave.is_floating_point():
            raise TypeError(f"{self._name}: expected a floating-point waveform tensor; got {type(wave).__name__}"
                            f"{'' if not torch.is_tensor(wave) else ' of dtype ' + str(wave.dtype)}")
        if wave.ndim == 1:
            wave = wave[None]
        elif wave.ndim == 3:
            wave = wave.mean(1)  # (B, C, N) stereo / multichannel → mono
        elif wave.ndim != 2:
            raise ValueError(f"{self._name}: waveform must be (N,), (B, N) or (B, C, N); got {tuple(wave.shape)}")
        if not torch.isfinite(wave).all():
            raise ValueError(f"{self._name}: the waveform contains NaN or inf")
        wave = self.resample(wave.to(torch.float32))  # windows and filterbanks are float32 (half/bf16/float64 in)
        if wave.shape[-1] < self.min_samples:
            raise ValueError(
                f"{self._name}: the waveform has {wave.shape[-1]} samples at {self.sample_rate} Hz "
                f"({wave.shape[-1] / self.sample_rate:.4f} s); at least {self.min_samples} samples "
                f"({self.min_samples / self.sample_rate:.4f} s) are needed"
            )
        return wave


class L3LogSpectrogram(_Frontend):
    """L3-Net / AVE-Net log-spectrogram (Arandjelović & Zisserman 2017, Sec. 2.2).

    Audio at 48 kHz; 10 ms periodic-Hann windows (480 samples) with half overlap (hop 240), zero-padded to an FFT of
    512 → 257 frequency bins; no centring, so 1 s gives 199 frames; then ``log(|X| + eps)``.

    Input ``(B, N)`` at ``input_sample_rate``; output ``(B, 1, 257, T)`` with ``T = 1 + (N - 480) // 240``
    (``(B, 1, 257, 199)`` for one second). Objects that Sound quotes 257 × 200 for the same recipe; we follow L3's
    count of 199 windows, which is what un-padded framing gives.
    """

    def __init__(self, sample_rate: int = 48000, win_length: int = 480, hop_length: int = 240, n_fft: int = 512,
                 eps: float = 1e-6, input_sample_rate: int | None = None) -> None:
        super().__init__(sample_rate, input_sample_rate, win_length, "L3LogSpectrogram")
        if win_length > n_fft:
            raise ValueError(f"L3LogSpectrogram: win_length {win_length} exceeds n_fft {n_fft}")
        self.eps = float(eps)
        # torchaudio centres a short window inside the n_fft frame; padding by the difference makes frame t start at
        # sample t * hop exactly (frames of win_length samples, zero-padded to n_fft)
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, pad=(n_fft - win_length) // 2, power=1.0,
            center=False,
        )

    def forward(self, wave: Tensor) -> Tensor:
        mag = self.spectrogram(self.prepare(wave))  # (B, F, T)
        return torch.log(mag + self.eps)[:, None]


class VGGishLogMel(_Frontend):
    """VGGish log-mel examples (Hershey et al. 2017; the frontend of DMC's audio subnet).

    16 kHz; 25 ms periodic-Hann windows (400) every 10 ms (160), FFT 512, magnitude; 64 mel bands from 125 to 7500 Hz on
    the HTK scale (triangles linear in mel, DC bin weight 0); ``log(mel + 0.01)``; then non-overlapping examples of
    ``example_frames`` frames (96 = 0.96 s), without padding: a clip shorter than ``400 + 160 · (example_frames - 1)``
    samples (0.975 s for 96 frames) gives no example and raises ``ValueError``.

    Input ``(B, N)``; output ``(B, E, example_frames, n_mels)`` with ``E`` whole examples per clip. For a clip with one
    example this is the ``(B, 1, T, F)`` map a VGGish network takes; otherwise reshape to ``(B * E, 1, T, F)``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 64, f_min: float = 125.0, f_max: float = 7500.0, log_offset: float = 0.01,
                 example_frames: int = 96, example_hop: int | None = None,
                 input_sample_rate: int | None = None) -> None:
        min_samples = win_length + hop_length * (example_frames - 1)
        super().__init__(sample_rate, input_sample_rate, min_samples, type(self).__name__)
        if win_length > n_fft:
            raise ValueError(f"{type(self).__name__}: win_length {win_length} exceeds n_fft {n_fft}")
        self.example_frames = int(example_frames)
        self.example_hop = int(example_hop or example_frames)
        self.log_offset = float(log_offset)
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, pad=(n_fft - win_length) // 2, power=1.0,
            center=False,
        )
        self.register_buffer("mel_weights", vggish_mel_matrix(n_mels, n_fft // 2 + 1, sample_rate, f_min, f_max))

    def log_mel(self, wave: Tensor) -> Tensor:
        """All frames, before framing into examples: ``(B, n_frames, n_mels)``."""
        mag = self.spectrogram(self.prepare(wave))  # (B, F, T)
        mel = torch.matmul(mag.transpose(1, 2), self.mel_weights)  # (B, T, n_mels)
        return torch.log(mel + self.log_offset)

    def forward(self, wave: Tensor) -> Tensor:
        frames = self.log_mel(wave)
        return frames.unfold(1, self.example_frames, self.example_hop).transpose(-1, -2).contiguous()


class DMCLogMel(VGGishLogMel):
    """DMC's audio input (Hu, Nie & Li 2019, Sec. 4): VGGish's log-mel with one example stretched to 496 frames.

    Input ``(B, N)`` at 16 kHz with ``N >= 79600`` (4.975 s); output ``(B, E, 496, 64)``, ``(B, 1, 496, 64)`` for a
    5 s clip.
    """

    def __init__(self, example_frames: int = 496, **kwargs: Any) -> None:
        super().__init__(example_frames=example_frames, **kwargs)


class DSOLLogMel(_Frontend):
    """DSOL log-mel (Hu et al. 2020, Sec. 4.2, as its public code computes it).

    16 kHz; centred STFT with zero padding, periodic Hann of 160 samples, hop 80 → 201 frames for one second; a 64-band
    Slaney mel filterbank (librosa's default, f_max 8000 Hz) applied to the **magnitude** STFT; then
    ``power_to_db``: ``10 · log10(max(x, 1e-10))``, floored at ``top_db`` below each example's maximum.

    Input ``(B, N)``; output ``(B, 1, T, 64)`` (time × mel) with ``T = 1 + N // 80`` → ``(B, 1, 201, 64)`` for 1 s.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 160, hop_length: int = 80, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float = 8000.0, top_db: float | None = 80.0,
                 input_sample_rate: int | None = None) -> None:
        super().__init__(sample_rate, input_sample_rate, 1, "DSOLLogMel")
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0,
                                                             center=True, pad_mode="constant")
        with warnings.catch_warnings():
            # 64 bands over 81 FFT bins leave a few low bands without any bin, exactly as in DSOL's librosa code
            warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
            self.mel = torchaudio.transforms.MelScale(n_mels=n_mels, sample_rate=sample_rate, f_min=f_min,
                                                      f_max=f_max, n_stft=n_fft // 2 + 1, norm="slaney",
                                                      mel_scale="slaney")
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)

    def forward(self, wave: Tensor) -> Tensor:
        mel = self.mel(self.spectrogram(self.prepare(wave)))  # (B, n_mels, T)
        return self.to_db(mel[:, None]).transpose(-1, -2).contiguous()  # top_db per example on (B, 1, ...)


class CAVLLogFrequency(_Frontend):
    """CAVL log-frequency magnitude spectrogram (Hu et al. 2020, Sec. 5).

    11.025 kHz (Sound of Pixels' rate); STFT with a periodic Hann window of 1022 samples (FFT 1022 → 512 bins), hop 256,
    centred with zero padding after the clip is zero-padded to a whole number of hops; the 512 linear bins are resampled
    onto 512 log-spaced ones (:func:`log_frequency_matrix`, Sound of Pixels' warp); then ``log(x + eps)``.

    Input ``(B, N)``; output ``(B, 1, freq_bins, T)`` with ``T = 1 + ceil(N / 256)`` → ``(B, 1, 512, 432)`` for 10 s.
    """

    def __init__(self, sample_rate: int = 11025, n_fft: int = 1022, hop_length: int = 256, freq_bins: int = 512,
                 eps: float = 1e-6, input_sample_rate: int | None = None) -> None:
        super().__init__(sample_rate, input_sample_rate, 1, "CAVLLogFrequency")
        self.hop_length = int(hop_length)
        self.eps = float(eps)
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0,
                                                             center=True, pad_mode="constant")
        self.register_buffer("warp", log_frequency_matrix(n_fft // 2 + 1, freq_bins))

    def forward(self, wave: Tensor) -> Tensor:
        wave = self.prepare(wave)
        padded = math.ceil(wave.shape[-1] / self.hop_length) * self.hop_length
        wave = nn.functional.pad(wave, (0, padded - wave.shape[-1]))
        mag = self.spectrogram(wave)  # (B, F, T)
        return torch.log(torch.matmul(self.warp, mag) + self.eps)[:, None]


class SeparationSTFT(CAVLLogFrequency):
    """CAVL's spectrogram with the way back, for mask-based separation (CAVL §3.3.2, after Sound of Pixels).

    The same STFT as :class:`CAVLLogFrequency` (periodic Hann of ``n_fft`` samples, hop ``hop_length``, the clip
    zero-padded to whole hops, centred with zero padding), but complex, so that a separated source can be rebuilt
    with the mixture's phase: ``wave (B, N) → stft → (B, F, T)`` complex with ``F = n_fft // 2 + 1``; magnitudes go
    to the U-Net on the log-frequency grid (:meth:`log_input`, equal to :class:`CAVLLogFrequency`'s output); a mask
    predicted there goes back to the linear grid (:meth:`unwarp`, :func:`inverse_log_frequency_matrix`), multiplies
    the mixture's STFT and is inverted (:meth:`apply_mask`). Everything is batched on the module's device.

    Waveforms at another rate (``input_sample_rate``) are brought to ``sample_rate`` by :meth:`prepare` first;
    :meth:`stft` takes waveforms already at ``sample_rate``.
    """

    def __init__(self, sample_rate: int = 11025, n_fft: int = 1022, hop_length: int = 256, freq_bins: int = 512,
                 eps: float = 1e-6, input_sample_rate: int | None = None) -> None:
        super().__init__(sample_rate, n_fft, hop_length, freq_bins, eps, input_sample_rate)
        self.n_fft = int(n_fft)
        self.register_buffer("unwarp_matrix", inverse_log_frequency_matrix(n_fft // 2 + 1, freq_bins))

    def stft(self, wave: Tensor) -> Tensor:
        """``(B, N)`` float waveforms at ``sample_rate`` → ``(B, F, T)`` complex, ``T = 1 + ceil(N / hop)``."""
        if wave.ndim != 2 or not wave.is_floating_point():
            raise ValueError(f"SeparationSTFT.stft: wave must be a float (B, N) tensor; got {tuple(wave.shape)} "
                             f"{wave.dtype}")
        padded = math.ceil(wave.shape[-1] / self.hop_length) * self.hop_length
        wave = nn.functional.pad(wave.float(), (0, padded - wave.shape[-1]))
        return torch.stft(wave, self.n_fft, self.hop_length, window=self.spectrogram.window, center=True,
                          pad_mode="constant", return_complex=True)

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """``(B, F, T)`` complex → ``(B, length)`` waveforms: the inverse of :meth:`stft` (overlap-add)."""
        padded = (spec.shape[-1] - 1) * self.hop_length
        if length > padded:
            raise ValueError(f"SeparationSTFT.istft: length {length} is longer than the {padded} samples that "
                             f"{spec.shape[-1]} frames cover")
        wave = torch.istft(spec, self.n_fft, self.hop_length, window=self.spectrogram.window, center=True,
                           length=padded)
        return wave[..., :length]

    def to_log_frequency(self, mag: Tensor) -> Tensor:
        """Linear-frequency magnitudes ``(..., F, T)`` → the log-frequency grid ``(..., freq_bins, T)``."""
        return torch.matmul(self.warp, mag)

    def log_input(self, mag: Tensor) -> Tensor:
        """The U-Net's input from linear magnitudes ``(B, F, T)``: ``log(warped |X| + eps)`` as
        ``(B, 1, freq_bins, T)``."""
        return torch.log(self.to_log_frequency(mag) + self.eps)[:, None]

    def unwarp(self, mask: Tensor) -> Tensor:
        """A mask on the log-frequency grid ``(..., freq_bins, T)`` → the STFT's bins ``(..., F, T)``."""
        return torch.matmul(self.unwarp_matrix, mask)

    def apply_mask(self, mask: Tensor, mix_spec: Tensor, length: int) -> Tensor:
        """The separated waveform ``(B, length)``: ``mask (B, freq_bins, T)`` brought back to the linear grid,
        multiplying the mixture's complex STFT ``mix_spec (B, F, T)`` (so the mixture's phase is kept), inverted."""
        return self.istft(self.unwarp(mask.float()) * mix_spec, length)


_FRONTENDS = {
    "l3_logspec": L3LogSpectrogram,
    "vggish_logmel": VGGishLogMel,
    "dmc_logmel": DMCLogMel,
    "dsol_logmel": DSOLLogMel,
    "cavl_logfreq": CAVLLogFrequency,
}


def make_frontend(audio_cfg: dict[str, Any], input_sample_rate: int | None = None) -> nn.Module:
    """Build the frontend described by a config's ``audio`` dict (see ``avlib.configs``).

    ``audio_cfg["frontend"]`` names the class (``l3_logspec``, ``vggish_logmel``, ``dmc_logmel``, ``dsol_logmel``,
    ``cavl_logfreq``); ``frames`` becomes ``example_frames`` for the VGGish family; keys that only describe the input
    (``seconds``, and ``frames`` elsewhere) are checked by the frontend's output, not passed on.
    """
    cfg = dict(audio_cfg)
    name = cfg.pop("frontend", None)
    if name not in _FRONTENDS:
        raise ValueError(f"make_frontend: audio_cfg['frontend'] must be one of {sorted(_FRONTENDS)}; got {name!r}")
    cls = _FRONTENDS[name]
    cfg.pop("seconds", None)
    frames = cfg.pop("frames", None)
    if issubclass(cls, VGGishLogMel) and frames is not None:
        cfg["example_frames"] = frames
    return cls(**cfg, input_sample_rate=input_sample_rate)


def first_example(frontend: nn.Module, wave: Tensor) -> Tensor:
    """The single-example network input of a batch: ``(B, N)`` waveforms → ``(B, 1, T, F)`` (VGGish family: the
    first example; others: the frontend's one map), computed on the waveforms' device in float32 even inside an
    autocast region, so that spectrograms do not depend on the training precision."""
    frontend.to(wave.device)
    with torch.autocast(device_type=wave.device.type, enabled=False):
        return frontend(wave.float())[:, :1]


def example_samples(frontend: nn.Module, audio_cfg: dict[str, Any]) -> int:
    """Samples per clip that a network input needs: ``audio_cfg["seconds"]`` where the config fixes the input length
    (CAVL: 10 s), else the frontend's minimum (one VGGish example), at the frontend's sample rate."""
    seconds = audio_cfg.get("seconds")
    return round(seconds * frontend.sample_rate) if seconds is not None else int(frontend.min_samples)
