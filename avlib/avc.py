"""Tools around the audio-visual correspondence (AVC) task: fast clip access, and the evaluations of L3-Net,
AVE-Net and AVOL-Net (Arandjelović & Zisserman 2017, 2018).

- :class:`InMemoryClips` keeps a world's waveforms, rendered frames and labels in memory, so that the many AVC pairs
  of a training run cost array slicing instead of re-synthesis.
- :func:`build_avc` builds a net, its audio frontend and its step function from a config of ``avlib.configs``.
- :func:`avc_accuracy_on` scores the AVC task on a set of pairs; :func:`clip_features` extracts one frame and the
  surrounding audio per clip and embeds them, for linear probes (:func:`linear_probe`), k-means NMI and cross-modal
  retrieval (:func:`retrieval_ndcg`, Objects that Sound Table 1).
- The shortcut of Objects that Sound Sec. 3.3: :func:`grid_offset_test` scores the same positive pairs with the audio
  window centred on a frame time and moved off the frame grid by a fraction of a frame; :func:`grid_phase_probe`
  asks whether a linear classifier can read "on the grid or not" from the audio embedding.
- Localization (AVOL-Net): :func:`localization_maps`, :func:`pointing_hits` (is the map's mode inside a box? the
  measure of Objects that Sound Sec. 4.1), :func:`center_hits` (the centred baseline) and :func:`box_mass` (how much
  of the map lies on one object rather than another).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avlib.audio import make_frontend
from avlib.data.pairs import AVCPairs
from avlib.metrics import avc_accuracy, ndcg_at_k, random_ndcg_at_k
from avlib.nets.ave import AVENet, AVOLNet
from avlib.nets.l3 import L3Net, avc_step_fn

__all__ = [
    "InMemoryClips",
    "avc_accuracy_on",
    "box_mass",
    "build_avc",
    "center_hits",
    "clip_features",
    "grid_offset_test",
    "grid_phase_probe",
    "linear_probe",
    "localization_maps",
    "localization_set",
    "pointing_hits",
    "retrieval_ndcg",
    "train_avc",
    "upsample_maps",
]

NETS: dict[str, type[nn.Module]] = {"l3": L3Net, "ave": AVENet, "avol": AVOLNet}


class InMemoryClips:
    """A caching view of a clip source (e.g. ``SynthOrchestra``) with the interface :class:`AVCPairs` needs.

    Waveforms and labels of ``preload`` clips are computed once up front; frames are rendered on first request and then
    kept. Everything else (``clip_frame_indices``, ``clip_fps``, ``clip_samples``, ``ontology``, ``scene``, ...) is
    read from ``world``.

    Args:
        world: the clips, following ``avlib.data.pairs.ClipSource``.
        preload: clip indices whose audio is synthesised now (default: none; the rest are cached on first use).
    """

    def __init__(self, world: Any, preload: Sequence[int] = ()) -> None:
        self.world = world
        self.sample_rate = int(world.sample_rate)
        self._audio: dict[int, torch.Tensor] = {}
        self._frames: dict[tuple[int, int], torch.Tensor] = {}
        self._labels: dict[int, int] = {}
        for i in preload:
            self.get_audio(int(i))
            self.clip_label(int(i))

    def __len__(self) -> int:
        return len(self.world)

    def __getattr__(self, name: str) -> Any:  # everything not cached is the world's own
        if name == "world":
            raise AttributeError(name)
        return getattr(self.world, name)

    def clip_label(self, index: int) -> int:
        """The clip's category (cached)."""
        index = int(index)
        if index not in self._labels:
            self._labels[index] = int(self.world.clip_label(index))
        return self._labels[index]

    def get_audio(self, index: int) -> torch.Tensor:
        """``(N,)`` waveform of clip ``index`` (cached)."""
        index = int(index)
        if index not in self._audio:
            self._audio[index] = self.world.get_audio(index)
        return self._audio[index]

    def get_frame(self, index: int, frame: int) -> torch.Tensor:
        """``(3, H, W)`` frame ``frame`` of clip ``index`` (cached)."""
        key = (int(index), int(frame))
        if key not in self._frames:
            self._frames[key] = self.world.get_frame(*key)
        return self._frames[key]


def build_avc(cfg: dict) -> tuple[nn.Module, nn.Module, Any]:
    """``(net, frontend, step_fn)`` for a config of ``avlib.configs`` with method ``l3``, ``ave`` or ``avol``."""
    method = cfg.get("method")
    if method not in NETS:
        raise ValueError(f"build_avc: cfg['method'] must be one of {sorted(NETS)}; got {method!r}")
    net = NETS[method](**cfg["net"])
    frontend = make_frontend(cfg["audio"])
    return net, frontend, avc_step_fn(frontend)


def train_avc(
    cfg: dict,
    source: Any,
    clips: Sequence[int],
    seed: int = 0,
    steps: int | None = None,
    progress: bool = False,
    net: nn.Module | None = None,
    **pairs: Any,
) -> tuple[nn.Module, nn.Module, Any]:
    """Train the AVC method of ``cfg`` on pairs drawn from ``source``'s ``clips`` with ``avlib.train.fit``.

    ``pairs`` overrides ``cfg["pairs"]`` (``negative_mode``, ``misalign``, ``window_seconds``). The net is built from
    ``cfg`` and initialised from ``seed``, or ``net`` is trained further (e.g. an AVOL-Net made from an AVE-Net). Each
    step sees fresh pairs (the pair set holds ``steps * batch_size`` items). Returns ``(net, frontend, TrainResult)``.
    """
    from avlib.methods import make_optimizer, train_config
    from avlib.train import fit

    steps = int(steps or cfg["steps"])
    torch.manual_seed(seed)
    built, frontend, step_fn = build_avc(cfg)
    net = built if net is None else net
    pair_cfg = {**cfg["pairs"], **pairs}
    data = AVCPairs(source, clips=clips, length=steps * cfg["batch_size"], volume_jitter=cfg["volume_jitter"],
                    seed=seed, **pair_cfg)
    train_cfg = train_config(cfg, steps=steps, seed=seed, progress=progress, log_every=10, live_plot=False)
    result = fit(net, step_fn, data, make_optimizer(net, cfg), train_cfg)
    return net, frontend, result


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _logits(model: nn.Module, frontend: nn.Module, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    dev = _device(model)
    frontend.to(dev)
    return model.correspondence_logit(image.to(dev), frontend(audio.to(dev))).float().cpu()


@torch.no_grad()
def avc_accuracy_on(model: nn.Module, frontend: nn.Module, pairs: AVCPairs, batch_size: int = 128) -> float:
    """AVC accuracy of ``model`` (in eval mode) over every item of ``pairs`` (half positives, half negatives)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pairs.batch(range(start, min(start + batch_size, len(pairs))))
        logits.append(_logits(model, frontend, batch["image"], batch["audio"]))
        labels.append(batch["label"])
    model.train(was_training)
    return avc_accuracy(torch.cat(logits), torch.cat(labels))


def _window(source: Any, clip: int, center: int, window: int) -> torch.Tensor:
    start = int(center) - window // 2
    audio = source.get_audio(clip)
    if start < 0 or start + window > audio.shape[-1]:
        raise ValueError(f"clip {clip}: a {window}-sample window centred at sample {center} leaves the clip")
    return audio[start : start + window]


def middle_frame(source: Any, clip: int, window_seconds: float = 1.0) -> tuple[int, int]:
    """``(frame number, centre sample)`` of the middle one among the frames of ``clip`` whose centred
    ``window_seconds`` audio window fits in the clip."""
    sr = source.sample_rate
    window = int(round(window_seconds * sr))
    frames = np.asarray(source.clip_frame_indices(clip), dtype=np.int64)
    centers = np.round(frames * sr / float(source.clip_fps(clip))).astype(np.int64)
    ok = np.flatnonzero((centers - window // 2 >= 0) & (centers - window // 2 + window <= source.clip_samples(clip)))
    if ok.size == 0:
        raise ValueError(f"clip {clip} is too short for a {window_seconds} s window centred on a frame")
    mid = ok[ok.size // 2]
    return int(frames[mid]), int(centers[mid])


def _clip_inputs(
    source: Any, clips: Sequence[int], window_seconds: float, shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Middle frame ``(N,3,H,W)``, audio window centred on it plus ``shift`` samples ``(N,n)``, labels ``(N,)``."""
    window = int(round(window_seconds * source.sample_rate))
    frames, audio, labels = [], [], []
    for c in clips:
        k, center = middle_frame(source, int(c), window_seconds)
        frames.append(source.get_frame(int(c), k))
        audio.append(_window(source, int(c), center + shift, window))
        labels.append(source.clip_label(int(c)))
    return torch.stack(frames), torch.stack(audio), torch.tensor(labels, dtype=torch.int64)


@torch.no_grad()
def clip_features(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    clips: Sequence[int],
    window_seconds: float = 1.0,
    batch_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Embed one frame and the audio window centred on it per clip (Objects that Sound Sec. 3.1's database).

    Uses ``model.embed_image`` / ``model.embed_audio`` (L3-Net: pool4 features; AVE-Net: unit-norm embeddings).
    Returns ``{"image": (N, D), "audio": (N, D), "labels": (N,)}`` on the CPU.
    """
    was_training = model.training
    model.eval()
    dev = _device(model)
    frontend.to(dev)
    image, audio, labels = _clip_inputs(source, clips, window_seconds)
    v, a = [], []
    for s in range(0, len(clips), batch_size):
        v.append(model.embed_image(image[s : s + batch_size].to(dev)).float().cpu())
        a.append(model.embed_audio(frontend(audio[s : s + batch_size].to(dev))).float().cpu())
    model.train(was_training)
    return {"image": torch.cat(v), "audio": torch.cat(a), "labels": labels}


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, c: float = 1.0
) -> float:
    """Test accuracy of a multinomial logistic regression on z-scored frozen features (L3 Sec. 3.3's linear protocol).

    ``train_x (N, D)``, ``train_y (N,)``, ``test_x (M, D)``, ``test_y (M,)``; the z-score statistics come from the
    training features only. ``c`` is the inverse L2 regularisation strength of ``sklearn``'s ``LogisticRegression``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(train_x.double().numpy(), train_y.numpy())
    return float(clf.score(test_x.double().numpy(), test_y.numpy()))


def retrieval_ndcg(feats: dict[str, torch.Tensor], ontology: Any, k: int = 30) -> dict[str, dict[str, float]]:
    """nDCG@k of the four query/database combinations (Objects that Sound Table 1) and their random-ranking values.

    ``feats`` as returned by :func:`clip_features`; relevance ``C - tree distance`` from ``ontology.relevance``.
    Embeddings are L2-normalised (as the paper does for every baseline; a no-op for AVE-Net). A same-modality query
    never retrieves itself. Returns ``{"im-im": {"ndcg": ..., "random": ...}, "im-aud": ..., ...}``.
    """
    rel = ontology.relevance(feats["labels"], feats["labels"])
    out = {}
    for name, q, d in (("im-im", "image", "image"), ("im-aud", "image", "audio"), ("aud-im", "audio", "image"),
                       ("aud-aud", "audio", "audio")):
        same = q == d
        out[name] = {
            "ndcg": ndcg_at_k(feats[q], feats[d], rel, k=k, exclude_self=same, l2_normalize=True),
            "random": random_ndcg_at_k(rel, k=k, exclude_self=same),
        }
    return out


@torch.no_grad()
def grid_offset_test(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    clips: Sequence[int],
    shift_frames: float = 0.5,
    window_seconds: float = 1.0,
) -> dict[str, float]:
    """Score the same pairs with the audio window on the frame grid and moved ``shift_frames`` of a frame off it.

    Positives pair each clip's middle frame with its own audio; negatives pair it with the audio of the previous clip
    in ``clips`` (the audio batch rolled by one). Half a frame (20 ms at 25 fps) changes nothing a listener could
    hear, but a model that learnt "audio centred on a frame time = positive" (the shortcut of Objects that Sound
    Sec. 3.3) calls on-grid negatives positives. Returns the mean probability of "corresponds" for ``pos_on``,
    ``pos_off``, ``neg_on``, ``neg_off`` and the AVC accuracy of the on-grid and off-grid halves (``acc_on``,
    ``acc_off``).
    """
    was_training = model.training
    model.eval()
    shift = int(round(shift_frames * source.sample_rate / float(source.clip_fps(clips[0]))))
    image, on, _ = _clip_inputs(source, clips, window_seconds)
    _, off, _ = _clip_inputs(source, clips, window_seconds, shift=shift)
    out: dict[str, float] = {}
    correct = {"on": [], "off": []}
    for grid, audio in (("on", on), ("off", off)):
        for kind, aud in (("pos", audio), ("neg", audio.roll(1, dims=0))):
            p = torch.sigmoid(_logits(model, frontend, image, aud))
            out[f"{kind}_{grid}"] = float(p.mean())
            correct[grid].append((p > 0.5) if kind == "pos" else (p <= 0.5))
    model.train(was_training)
    for grid in ("on", "off"):
        out[f"acc_{grid}"] = float(torch.cat(correct[grid]).double().mean())
    return out


@torch.no_grad()
def grid_phase_probe(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    train_clips: Sequence[int],
    test_clips: Sequence[int],
    shift_frames: float = 0.5,
    window_seconds: float = 1.0,
) -> float:
    """Accuracy of a linear probe that tells on-grid from off-grid audio windows using only the audio embedding.

    Each clip gives two windows of almost the same sound (centred on the middle frame, and ``shift_frames`` of a frame
    later); chance is 0.5. A high accuracy means the embedding carries the frame phase: the shortcut, learnt.
    """
    was_training = model.training
    model.eval()
    dev = _device(model)
    frontend.to(dev)
    shift = int(round(shift_frames * source.sample_rate / float(source.clip_fps(train_clips[0]))))

    def embed(clips: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        _, on, _ = _clip_inputs(source, clips, window_seconds)
        _, off, _ = _clip_inputs(source, clips, window_seconds, shift=shift)
        x = model.embed_audio(frontend(torch.cat([on, off]).to(dev))).float().cpu()
        return x, torch.cat([torch.ones(len(clips)), torch.zeros(len(clips))]).long()

    xtr, ytr = embed(train_clips)
    xte, yte = embed(test_clips)
    model.train(was_training)
    return linear_probe(xtr, ytr, xte, yte)


def localization_set(source: Any, clips: Sequence[int], window_seconds: float = 1.0) -> dict[str, torch.Tensor]:
    """Test items for "where is the sound?" and "what would make this sound?" from scenes with one sounding and one
    silent instrument (``SynthOrchestra(..., n_silent=1)``).

    For each clip (those with exactly one sounding and one silent visible object): the middle frame ``image``, its own
    audio window ``audio``, the boxes ``sounding_box`` / ``silent_box`` (xyxy pixels) and the pixel mask
    ``sounding_mask``; and ``swap_audio``, the audio window of another clip in ``clips`` whose category is the silent
    object's (``swap_ok`` is False where no such clip exists). Returns a dict of stacked tensors plus ``clips``.
    """
    window = int(round(window_seconds * source.sample_rate))
    rows: dict[str, list] = {k: [] for k in ("clips", "image", "audio", "sounding_box", "silent_box", "sounding_mask",
                                             "silent_category")}
    for c in clips:
        k, center = middle_frame(source, int(c), window_seconds)
        scene = source.scene(int(c), frames=[k])
        if scene.categories.numel() != 2 or int(scene.sounding.sum()) != 1:
            continue
        snd = int(scene.sounding.long().argmax())
        rows["clips"].append(int(c))
        rows["image"].append(scene.frames[0])
        rows["audio"].append(_window(source, int(c), center, window))
        rows["sounding_box"].append(scene.boxes[0, snd])
        rows["silent_box"].append(scene.boxes[0, 1 - snd])
        rows["sounding_mask"].append(scene.sounding_mask(k))
        rows["silent_category"].append(int(scene.categories[1 - snd]))
    if not rows["clips"]:
        raise ValueError("localization_set: no clip has one sounding and one silent object (use n_silent=1 scenes)")
    out = {k: torch.stack(v) if torch.is_tensor(v[0]) else torch.tensor(v) for k, v in rows.items()}
    labels = torch.tensor([source.clip_label(int(c)) for c in clips])
    donors = labels[None, :] == out["silent_category"][:, None]  # (N, len(clips)): clips that sound like the silent one
    out["swap_ok"] = donors.any(1)
    pick = donors.float().argmax(1)
    out["swap_audio"] = torch.stack([
        _window(source, int(clips[j]), middle_frame(source, int(clips[j]), window_seconds)[1], window)
        for j in pick.tolist()
    ])
    return out


@torch.no_grad()
def localization_maps(
    model: AVOLNet, frontend: nn.Module, image: torch.Tensor, audio: torch.Tensor, batch_size: int = 128
) -> torch.Tensor:
    """AVOL-Net maps ``(B, h, w)`` (probabilities) for ``image (B, 3, H, W)`` and waveforms ``audio (B, N)``."""
    was_training = model.training
    model.eval()
    dev = _device(model)
    frontend.to(dev)
    maps = [
        model.localize(image[s : s + batch_size].to(dev), frontend(audio[s : s + batch_size].to(dev))).float().cpu()
        for s in range(0, image.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(maps)


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``points (B, 2)`` xy pixels inside xyxy ``boxes (B, 4)`` → ``(B,)`` bool."""
    x, y = points[:, 0], points[:, 1]
    return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Whether the mode of each map falls inside its box (Objects that Sound Sec. 4.1's localization measure).

    ``maps (B, h, w)`` on a grid covering the image of ``image_size = (H, W)`` pixels; the mode is the centre of the
    highest cell, in pixels. ``boxes (B, 4)`` xyxy pixels. Returns ``(B,)`` bool.
    """
    if maps.dim() != 3 or boxes.shape != (maps.shape[0], 4):
        raise ValueError(f"pointing_hits: maps must be (B, h, w) and boxes (B, 4); got {tuple(maps.shape)}, "
                         f"{tuple(boxes.shape)}")
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).argmax(1)
    rows, cols = flat // w, flat % w
    pts = torch.stack([(cols + 0.5) * image_size[1] / w, (rows + 0.5) * image_size[0] / h], 1)
    return _inside(pts, boxes.float())


def center_hits(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The centred baseline of Objects that Sound Sec. 4.1: is the image centre inside each box? ``(B,)`` bool."""
    centre = torch.tensor([[image_size[1] / 2, image_size[0] / 2]]).expand(boxes.shape[0], 2)
    return _inside(centre, boxes.float())


def box_mass(maps: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Mean of each map inside its box, after bilinear upsampling to the image: ``maps (B, h, w)``, ``boxes (B, 4)``
    xyxy pixels → ``(B,)``. Comparing two boxes of the same image says which object the map prefers."""
    up = upsample_maps(maps, image_size)
    ys = torch.arange(image_size[0], dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(image_size[1], dtype=torch.float32)[None, None, :] + 0.5
    b = boxes.float()[:, :, None, None]
    inside = ((ys >= b[:, 1]) & (ys < b[:, 3]) & (xs >= b[:, 0]) & (xs < b[:, 2])).float()  # (B, H, W)
    return (up * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1.0)


def upsample_maps(maps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, h, w)`` maps to ``(B, H, W)`` for display or cIoU."""
    return F.interpolate(maps[:, None], size=image_size, mode="bilinear", align_corners=False)[:, 0]
