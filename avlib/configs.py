"""Per-method configurations at each scale: ``get_config(method, scale)``.

``CONFIGS[method][scale]`` is a plain dict holding everything a chapter or the CLI needs to build and train a method:
``net`` (keyword arguments of the network class), the input pipeline (``image_size``, ``audio``), the data
(``data``: SynthOrchestra keyword arguments where the method trains on it), and the schedule (``batch_size``,
``steps``, ``lr``, ...). Scales: ``quick`` (2-core CPU, a chapter in minutes), ``colab`` (one Colab GPU), ``full``
(the paper). Other modules append their own methods with ``CONFIGS["name"] = {...}`` in their own section below.
"""

from __future__ import annotations

import copy
from typing import Any

from avlib.runtime import SCALES, current_scale

__all__ = ["CONFIGS", "get_config"]

CONFIGS: dict[str, dict[str, dict[str, Any]]] = {}

# ---------------------------------------------------------------------------------------------------------------- DMC
# Hu, Nie & Li (CVPR 2019). Full: VGG16 on 256x256 in [-1, 1] -> 8x8x512; VGGish on 496x64 log-mel -> 31x4x512;
# Adam 1e-4, batch 64, 25k iterations. k = 2 centers for single-sound localization (§5.1); T = 3 iterations and the
# center dimension m are the authors' code / our choice (the paper states neither).
# Quick / colab: a visual net with a receptive field of about a third of the image, so that each feature vector
# describes its own region (with an image-wide field every region "sees" the instrument and the two clusters stop
# separating object from background); z = 5 makes the assignments firm enough to read as masks.
_QUICK_DMC_VISUAL = [32, "M", 64, "M", 64, "M"]  # 64x64 -> 8x8x64, receptive field 22 px
_QUICK_DMC_AUDIO = [16, "M", 32, "M", 64, "M", 64]  # 96x32 log-mel -> 12x4x64
CONFIGS["dmc"] = {
    "full": {
        "net": {"visual_cfg": None, "audio_cfg": None, "k": 2, "center_dim": 128, "iters": 3, "batch_norm": False},
        "image_size": 256, "image_range": (-1.0, 1.0),
        "audio": {"frontend": "dmc_logmel", "sample_rate": 16000, "frames": 496, "n_mels": 64, "n_fft": 512,
                  "win_length": 400, "hop_length": 160},
        "margin": 1.0, "batch_size": 64, "steps": 25_000, "lr": 1e-4, "optimizer": "adam",
        "data": None,  # SoundNet-Flickr (400k videos) in the paper; see data_scripts/
    },
    "colab": {
        "net": {"visual_cfg": [32, 32, "M", 64, 64, "M", 128, 128, "M", 128, "M"],
                "audio_cfg": [32, "M", 64, "M", 128, 128, "M", 128, "M"], "k": 2, "center_dim": 64,
                "iters": 3, "batch_norm": True, "z": 5.0},
        "image_size": 128, "image_range": (-1.0, 1.0),
        "audio": {"frontend": "vggish_logmel", "sample_rate": 16000, "frames": 192, "n_mels": 64, "n_fft": 512,
                  "win_length": 400, "hop_length": 160},
        "margin": 1.0, "batch_size": 64, "steps": 3000, "lr": 3e-4, "optimizer": "adam",
        "data": {"family": "solo", "n_categories": 12, "size": 8000, "image_size": 128, "duration": 2.0},
    },
    "quick": {
        "net": {"visual_cfg": _QUICK_DMC_VISUAL, "audio_cfg": _QUICK_DMC_AUDIO, "k": 2, "center_dim": 32,
                "iters": 3, "batch_norm": True, "z": 5.0},
        "image_size": 64, "image_range": (-1.0, 1.0),
        "audio": {"frontend": "vggish_logmel", "sample_rate": 16000, "frames": 96, "n_mels": 32, "n_fft": 512,
                  "win_length": 400, "hop_length": 160},
        "margin": 1.0, "batch_size": 32, "steps": 300, "lr": 3e-4, "optimizer": "adam",
        "data": {"family": "solo", "n_categories": 8, "size": 512, "image_size": 64, "duration": 1.0},
        "eval_size": 128,
    },
}

# --------------------------------------------------------------------------------------------------------------- CAVL
# Hu et al. (2020), §3.1 and supplement §6.2. Full: VGGish without last pool on a 512x432 log-frequency spectrogram
# (10 s; STFT window 1022, hop 256) -> 64x54x512; VGG16 without last pool on 256x256 -> 16x16x512; fc 512->512;
# k_a = 1, k_v = 2 for curriculum C1; Adam 1e-4 (x0.1 per curriculum). beta, the EM iterations and the margin are not
# given in the paper: ours. Quick / colab: a visual net with a small receptive field (as for DMC), beta = 10 (about 10x
# the critical stiffness of the features in training, see chapter 2: the centers split, the assignments stay soft
# enough to be learned) and a wide margin (5, as in a public DMC port), so that mismatched sounds are pushed away from
# every visual center until the sounding object's center wins Eq. 7.
CONFIGS["cavl"] = {
    "full": {
        "net": {"visual_cfg": None, "audio_cfg": None, "embed_dim": 512, "k_audio": 1, "beta": 1.0, "iters": 5,
                "batch_norm": False},
        "image_size": 256, "image_range": (0.0, 1.0),
        "audio": {"frontend": "cavl_logfreq", "sample_rate": 11025, "seconds": 10.0, "n_fft": 1022,
                  "hop_length": 256, "freq_bins": 512, "frames": 432},
        "margin": 1.0, "batch_size": 32, "steps": 20_000, "lr": 1e-4, "optimizer": "adam", "curriculum_lr_decay": 0.1,
        "data": None,  # AudioSet-Balanced-Train graded into C1..C4; see data_scripts/
    },
    "colab": {
        "net": {"visual_cfg": [32, 32, "M", 64, 64, "M", 128, 128, "M"],
                "audio_cfg": [32, "M", 64, "M", 128, 128, "M", 128, "M"], "embed_dim": 128, "k_audio": 1,
                "beta": 10.0, "iters": 5, "batch_norm": True},
        "image_size": 128, "image_range": (0.0, 1.0),
        "audio": {"frontend": "vggish_logmel", "sample_rate": 16000, "frames": 192, "n_mels": 64, "n_fft": 512,
                  "win_length": 400, "hop_length": 160},
        "margin": 5.0, "batch_size": 64, "steps": 3000, "lr": 3e-4, "optimizer": "adam",
        "data": {"family": "c1", "n_categories": 12, "size": 8000, "image_size": 128, "duration": 2.0},
    },
    "quick": {
        "net": {"visual_cfg": [32, "M", 64, "M", 64, "M"], "audio_cfg": [16, "M", 32, "M", 64, "M", 64, "M"],
                "embed_dim": 32, "k_audio": 1, "beta": 10.0, "iters": 5, "batch_norm": True},
        "image_size": 64, "image_range": (0.0, 1.0),
        "audio": {"frontend": "vggish_logmel", "sample_rate": 16000, "frames": 96, "n_mels": 32, "n_fft": 512,
                  "win_length": 400, "hop_length": 160},
        "margin": 5.0, "batch_size": 32, "steps": 250, "lr": 3e-4, "optimizer": "adam",
        "data": {"family": "c1", "n_categories": 8, "size": 512, "image_size": 64, "duration": 1.0},
        "eval_size": 128,
    },
}


def get_config(method: str, scale: str | None = None) -> dict[str, Any]:
    """A fresh (deep-copied) config of ``method`` at ``scale`` (default: ``AVLIB_SCALE``, else ``quick``).

    Raises:
        KeyError: unknown method, naming the known ones.
        ValueError: unknown scale.
    """
    scale = current_scale(scale)
    key = method.strip().lower()
    if key not in CONFIGS:
        raise KeyError(f"get_config: unknown method {method!r}; known methods: {', '.join(sorted(CONFIGS))}")
    if scale not in CONFIGS[key]:
        raise ValueError(f"get_config: method {key!r} has no {scale!r} config (scales: {', '.join(SCALES)})")
    cfg = copy.deepcopy(CONFIGS[key][scale])
    cfg["method"], cfg["scale"] = key, scale
    return cfg

# ------------------------------------------------------------------------------------------------- L3 / AVE / AVOL
# Arandjelović & Zisserman: L3-Net (ICCV 2017, Sec. 2) and AVE-Net / AVOL-Net (ECCV 2018, Sec. 3.3). Full: 224x224
# frames and 1 s of 48 kHz audio as a 257x199 log-spectrogram (10 ms windows, half overlap, FFT 512); widths
# 64/128/256/512 with batch norm; Adam, weight decay 1e-5. L3: lr 1e-4, batch 256 (16 GPUs x 16), 60M pairs seen, its
# sampling = random negatives ("naive") with positives misaligned by up to 1 s. AVE/AVOL: batch 2048 (16 x 128), lr by
# grid search (1e-4 here), x0.94 every 16 epochs (the epoch size below assumes one pair per AudioSet-Instruments
# training clip), frame-aligned negatives plus L3's misalignment.
# Quick: same classes, widths 8/16/32/64, 64x64 frames, 1 s of 16 kHz audio (10 ms windows, half overlap, FFT 160:
# 81x199), SynthOrchestra solo scenes of 1.2 s (five frame-centred 1 s windows each) with a frame-boundary click of
# amplitude 0.02 (about 40 dB below the music in power), so that the shortcut of Objects that Sound Sec. 3.3 exists
# to be found.
_AVC_FULL_AUDIO = {"frontend": "l3_logspec", "sample_rate": 48000, "seconds": 1.0, "n_fft": 512, "win_length": 480,
                   "hop_length": 240}
_AVC_COLAB_AUDIO = {"frontend": "l3_logspec", "sample_rate": 48000, "seconds": 1.0, "n_fft": 512, "win_length": 480,
                    "hop_length": 240}
_AVC_QUICK_AUDIO = {"frontend": "l3_logspec", "sample_rate": 16000, "seconds": 1.0, "n_fft": 160, "win_length": 160,
                    "hop_length": 80}
_AVC_COLAB_DATA = {"family": "solo", "n_categories": 12, "size": 6000, "image_size": 128, "sample_rate": 48000,
                   "duration": 2.0, "frame_artifact": 0.02}
_AVC_QUICK_DATA = {"family": "solo", "n_categories": 8, "size": 768, "image_size": 64, "sample_rate": 16000,
                   "duration": 1.2, "frame_artifact": 0.02}
_AVE_FULL_EPOCH = 263_000 // 2048  # steps per epoch at batch 2048
_AVE_FULL_STEPS = 240 * _AVE_FULL_EPOCH
_AVE_FULL_SCHEDULE = {"schedule": "step", "gamma": 0.94,
                      "milestones": tuple(range(16 * _AVE_FULL_EPOCH, _AVE_FULL_STEPS, 16 * _AVE_FULL_EPOCH))}


def _avc_configs(net_full: dict, net_colab: dict, net_quick: dict, full_pairs: dict, full_train: dict) -> dict:
    """The three scales of one AVC method; ``full_*`` differ between L3 and AVE/AVOL, the rest is shared."""
    return {
        "full": {
            "net": net_full, "image_size": 224, "audio": dict(_AVC_FULL_AUDIO), "pairs": full_pairs,
            "volume_jitter": 0.1, "optimizer": "adam", "weight_decay": 1e-5, **full_train,
            "data": None,  # Flickr-SoundNet / Kinetics-Sounds (L3), AudioSet-Instruments (AVE, AVOL); see data_scripts/
        },
        "colab": {
            "net": net_colab, "image_size": 128, "audio": dict(_AVC_COLAB_AUDIO),
            "pairs": {"window_seconds": 1.0, "negative_mode": "frame_aligned", "misalign": False},
            "volume_jitter": 0.1, "optimizer": "adam", "weight_decay": 1e-5, "batch_size": 128, "steps": 4000,
            "lr": 3e-4, "data": dict(_AVC_COLAB_DATA), "train_clips": 5000, "eval_size": 1000,
        },
        "quick": {
            "net": net_quick, "image_size": 64, "audio": dict(_AVC_QUICK_AUDIO),
            "pairs": {"window_seconds": 1.0, "negative_mode": "frame_aligned", "misalign": False},
            "volume_jitter": 0.1, "optimizer": "adam", "weight_decay": 1e-5, "batch_size": 64, "steps": 150,
            "lr": 1e-3, "data": dict(_AVC_QUICK_DATA), "train_clips": 512, "eval_size": 256,
        },
    }


_AVC_WIDTHS = {"full": (64, 128, 256, 512), "colab": (32, 64, 128, 256), "quick": (8, 16, 32, 64)}
CONFIGS["l3"] = _avc_configs(
    {"widths": _AVC_WIDTHS["full"], "fusion_hidden": 128, "first_stride": 2},
    {"widths": _AVC_WIDTHS["colab"], "fusion_hidden": 128, "first_stride": 2},
    {"widths": _AVC_WIDTHS["quick"], "fusion_hidden": 32, "first_stride": 2},
    full_pairs={"window_seconds": 1.0, "negative_mode": "naive", "misalign": True},
    full_train={"batch_size": 256, "steps": 60_000_000 // 256, "lr": 1e-4},
)
# quick L3 follows its own paper's sampling (random negatives, misaligned positives), which is shortcut-proof too
CONFIGS["l3"]["quick"]["pairs"] = {"window_seconds": 1.0, "negative_mode": "naive", "misalign": True}
CONFIGS["l3"]["colab"]["pairs"] = {"window_seconds": 1.0, "negative_mode": "naive", "misalign": True}
for _name in ("ave", "avol"):
    CONFIGS[_name] = _avc_configs(
        {"widths": _AVC_WIDTHS["full"], "embed_dim": 128, "first_stride": 2},
        {"widths": _AVC_WIDTHS["colab"], "embed_dim": 128, "first_stride": 2},
        {"widths": _AVC_WIDTHS["quick"], "embed_dim": 32, "first_stride": 2},
        full_pairs={"window_seconds": 1.0, "negative_mode": "frame_aligned", "misalign": True},
        full_train={"batch_size": 2048, "steps": _AVE_FULL_STEPS, "lr": 1e-4, **_AVE_FULL_SCHEDULE},
    )
# AVOL-Net trains on scenes with a silent second instrument (what it must learn to ignore). At quick scale 150 steps
# of multiple-instance learning from scratch do not get off the ground on a CPU, so the quick AVOL-Net starts from the
# quick AVE-Net (``init_from``: same trunks, fc1/fc2 as 1x1 convs, calibration fitted on one batch) and is fine-tuned.
for _scale in ("quick", "colab"):
    CONFIGS["avol"][_scale]["data"]["n_silent"] = 1
CONFIGS["avol"]["quick"].update({"init_from": "ave", "steps": 60})
# channels-last convolutions: about 1.5x faster for these nets on a CPU with bf16 (and the usual choice on GPUs)
for _name in ("l3", "ave", "avol"):
    for _scale in ("quick", "colab", "full"):
        CONFIGS[_name][_scale]["channels_last"] = True
