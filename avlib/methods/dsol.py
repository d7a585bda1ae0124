"""Discriminative Sounding Objects Localization (Hu et al., NeurIPS 2020) as a method: config, the two stages, the
object dictionary, and class-aware evaluation.

Stage 1 (§3.1) on solo scenes: localization (Eq. 1: BCE on the GMP of the sounding map over matched and mismatched
pairs) alternated with classification on pseudo-labels. Each classification round first builds the dictionary: every
stage-1 item's map is cut at 0.05, its visual features masked-average-pooled (Eq. 2) and L2-normalised, and k-means
with K clusters (Eq. 3, :func:`dictionary_kmeans`) gives the keys (the dictionary) and the pseudo-labels; the audio
and visual classifiers are re-initialised and trained on them; the NMI of the pseudo-labels against the true
categories is logged. Stage 2 (§3.2) on multi-source scenes (2x2 mosaics or duets): class maps ``m^k = d^k . f(v)``
(Eq. 4), the sounding filter ``s^k = m^k o l`` (Eq. 5), ``p_v = softmax(GAP(s))`` (Eq. 6), ``L_c = KL(p_v || p_a)``
with ``p_a`` from the frozen stage-1 audio classifier (Eq. 7), ``L_2 = L_c + lambda L_1``, lambda = 0.5 (Eq. 8). At
test time the class-aware maps are a softmax over the keys at each location of ``s``; the keys are matched to
categories on held-out solo clips for evaluation only (:func:`avlib.eval.class_aware.match_keys`).

Stages (:meth:`DSOL.stages`): ``loc1``, then ``cls<r>``, ``loc<r>`` for rounds r = 2 ... ``rounds`` (the paper: 15
epochs, the dictionary rebuilt after every epoch but the last), then ``match`` (stage 2), whose first step builds the
final dictionary from the finished stage-1 network. ``alternate=False`` is the ablation without classification
rounds (appendix 8.3): the same localization steps in one stage, one dictionary at the start of stage 2.

Full (§4.2, appendix 8.1): 256 -> random 224 crops, 1 s at 16 kHz -> 201x64 log-mel, ResNet-18-S5 trunks, K = 11,
batch 32, Adam lr 1e-4, weight decay 1e-4 (the authors' code). **Trained from scratch here**; the paper's MUSIC runs
start the visual trunk from ImageNet (appendix 8.3, Table 8: NMI 0.748 vs 0.576 from scratch; appendix 8.1 says the
opposite): with the default widths :class:`~avlib.nets.backbones.ResNet18S5` takes torchvision's weights as they are.
Steps per round, classification steps and stage-2 steps are not in the paper: ours.

Quick / colab: the same classes, narrower (quarter / half widths; one block per stage at the quick scale) on 64 / 160
pixel frames of SynthOrchestra's ``solo`` (stage 1) and ``mosaic`` (stage 2) families; the in-memory worlds are
centre-cropped (resize = crop). The quick visual trunk has a small receptive field (``visual_stem="small"``: one 3x3
convolution at stride 1, no pool; stage strides 2, 2, 2, 1: 8x8 maps whose cells see 39 px of 64), as DMC's and CAVL's
quick trunks do; the world has 11 categories and K = 11, as MUSIC and the paper (with K = 8 the flattened softmax at a
silenced location, 1/8, stays above the paper's cut of 10% of the maximum, and the sounding filter can only add false
positives); ``test_temperature=3`` (the authors' code's). Measured at the quick scale (seed 0, one thread on a loaded
machine: stage 1 189 s, stage 2 40 s; held-out 2x2 mosaics with a sounding and a silent category, 128 scenes), CIoU@0.3
/ AUC / NSA, paper protocol: DSOL 0.094 / 0.135 / 0.81, its audio-free class maps 0.031 / 0.116 / 0.78, centred box 0 /
0.137 / 0.48, whole image 0 / 0.118 / 0, random map 0 / 0.118 / 0.02; stage 2 trained without the product 0 / 0.070 /
0.76, without L_1 0.016 / 0.107 / 0.79, without L_c 0.148 / 0.199 / 0.68 (better CIoU than the full L_2 here: Table 7's
ordering is not reproduced), these three from the same stage-1 network; without the classification rounds (trained
whole, 106 s) 0 / 0.051 / 0.90 and held-out NMI 0.19 against 0.30. The released code's protocol does not favour DSOL at
this scale: 0.016 / 0.124 / 0.99 against the audio-free maps' 0.055 / 0.126 / 0.87 (without the product 0.008 / 0.077 /
0.87). At test time T = 1 gives 0.039 / 0.53 (paper CIoU@0.3 / NSA) against 0.023 / 0.72 audio-free. The stage-1
sounding map is still weak (single-source IoU@0.5 0.19 against the centred box's 0.40; the final dictionary's held-out
NMI 0.30); the numbers rest on a handful of the 128 scenes.

Where the paper and the authors' code differ, the paper is the default and the code an option: ``kl="paper"`` is Eq. 7's
KL(p_v || p_a), ``kl="code"`` the code's ``kl_div(log p_v, p_a)`` = KL(p_a || p_v); ``negatives="global"`` is Eq. 1's
GMP on a mismatched pair, ``"quadrants"`` the code's stage-2 rule (every 2x2 quadrant's max must be 0);
``mask_dilation=0`` (the code dilates the mask by 1); ``class_map_affine=False`` (the code's learned scale and bias on
the class maps); ``test_temperature=1`` at full scale (the code multiplies the maps by 3 before the test-time softmax).
Ours: a mismatched pair is image i with the batch's sound i-1 (the code feeds each image twice, once with a negative
sound); stage 2 keeps the audio trunk and classifier frozen (in eval mode), so ``p_a`` is exactly the stage-1 network's
(the code keeps a second, frozen copy of the stage-1 network for ``p_a`` and lets L_1 train the shared audio trunk); a
classification round resumed from a checkpoint re-derives its pseudo-labels from the stored dictionary with the resumed
network.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, StackDataset

from avlib import metrics
from avlib.audio import first_example, make_frontend
from avlib.cluster import kmeans_objective, soft_kmeans
from avlib.data import ClipDataset, SynthOrchestra
from avlib.data.clips import MANIFEST
from avlib.data.views import ClipPairs, fit_length
from avlib.eval.avc import model_device
from avlib.eval.class_aware import (
    PROTOCOLS,
    category_maps,
    class_aware_baselines,
    class_aware_report,
    class_aware_targets,
    key_accuracy,
    match_keys,
)
from avlib.eval.localization import NO_BOXES, upsample_maps
from avlib.methods.base import Method, MethodConfig, StagePlan, register
from avlib.nets.backbones import RESNET18_WIDTHS
from avlib.nets.dsol import DSOLNet
from avlib.vision import DSOLImageTransform

__all__ = ["DSOL", "DSOLConfig", "DSOLStep", "classification_step", "dictionary_kmeans", "kl_loss",
           "localization_loss", "matching_step", "nearest_keys"]

PHASES = ("loc", "cls", "match")


@dataclass(frozen=True)
class DSOLConfig(MethodConfig):
    """DSOL: the trunks (``widths``, ``blocks``), the heads' width, K (``n_keys``; ``n_categories`` for evaluation,
    default K), the mask cut and dilation of Eq. 2, the k-means restarts and iterations, the schedule (``rounds``
    stage-1 rounds of ``round_steps`` localization steps, ``cls_steps`` classification steps in rounds 2 ...,
    ``match_steps`` stage-2 steps; ``alternate=False`` drops the classification rounds), stage 2's lambda and its
    ablations (``use_l1``, ``use_lc``, ``product``: Table 7's L_1, L_c, Prod), the paper/code options (module
    docstring), the stage-2 family (``multi_family``: ``mosaic`` or ``duet``) and, set per stage by
    :meth:`DSOL.stages`, ``phase`` (``loc``, ``cls``, ``match``) and ``dictionary_round`` (the round whose dictionary
    the stage needs; 0: none)."""

    method = "dsol"
    widths: tuple[int, ...] = RESNET18_WIDTHS
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    visual_stem: str = "resnet"
    visual_strides: tuple[int, ...] = (1, 2, 2, 1)
    embed_dim: int = 128
    n_keys: int = 11
    n_categories: int | None = None
    mask_threshold: float = 0.05
    mask_dilation: int = 0
    kmeans_restarts: int = 4
    kmeans_iters: int = 50
    rounds: int = 15
    round_steps: int = 600
    cls_steps: int = 200
    alternate: bool = True
    match_steps: int = 6000
    lam: float = 0.5
    use_l1: bool = True
    use_lc: bool = True
    product: bool = True
    kl: str = "paper"
    negatives: str = "global"
    class_map_affine: bool = False
    test_temperature: float = 1.0
    multi_family: str = "mosaic"
    phase: str = "loc"
    dictionary_round: int = 0
    resize: int = 256
    image_size: int = 224
    weight_decay: float = 1e-4
    audio: dict[str, Any] = field(default_factory=lambda: {"frontend": "dsol_logmel", "sample_rate": 16000,
                                                           "seconds": 1.0})


FULL = DSOLConfig(batch_size=32, steps=600, lr=1e-4)  # MUSIC solo halves and MUSIC-Synthetic; see data_scripts/
COLAB = FULL.replace(scale="colab", widths=(32, 64, 128, 256), embed_dim=64, rounds=6, round_steps=150, cls_steps=50,
                     match_steps=600, image_size=160, resize=160, batch_size=32, lr=3e-4, eval_size=256,
                     data={"n_categories": 11, "size": 3000, "image_size": 160, "duration": 1.0})
# quick: a visual trunk of local cells (3x3 stem at stride 1, no pool, strides 2, 2, 2, 1: 64 px -> 8x8, a cell sees
# 39 px), and K = 11 keys for 11 categories as in the paper: at a location the sound rules out, the sounding filter
# flattens the test-time softmax towards 1/K, below the paper's cut of 10% of the maximum only when K > 10
QUICK = FULL.replace(scale="quick", widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), visual_stem="small",
                     visual_strides=(2, 2, 2, 1), embed_dim=32, n_keys=11, rounds=3, round_steps=150, cls_steps=30,
                     steps=150, match_steps=150, image_size=64, resize=64, batch_size=32, lr=1e-3, eval_size=128,
                     test_temperature=3.0,
                     data={"n_categories": 11, "size": 512, "image_size": 64, "duration": 1.0})


# ---------------------------------------------------------------------------------------------------- the losses


def localization_loss(model: DSOLNet, fv: Tensor, ga: Tensor, negatives: str = "global") -> tuple[Tensor, Tensor]:
    """L_1 (Eq. 1): BCE of the GMP of the sounding map, 1 for each image with its own sound and 0 with the batch's
    previous sound (a mismatched pair); ``negatives="quadrants"`` asks each 2x2 quadrant's max of a mismatched map to
    be 0 instead (the authors' stage-2 code).

    Args:
        model: the network.
        fv: ``(B, C, h, w)`` visual features, B >= 2.
        ga: ``(B, C)`` max-pooled audio features.

    Returns:
        the scalar loss and the sounding maps of the matched pairs ``(B, h, w)``.
    """
    if fv.shape[0] < 2:
        raise ValueError("DSOL localization needs a batch of at least 2 (mismatched pairs come from the batch)")
    ev, ea = model.embed_visual(fv), model.embed_audio(ga)
    pos = model.loc_weight * torch.einsum("behw,be->bhw", ev, ea)  # logits of l
    neg = model.loc_weight * torch.einsum("behw,be->bhw", ev, ea.roll(1, dims=0))
    pos_score = pos.flatten(1).amax(1)  # GMP (sigmoid is monotone: GMP of l = sigmoid of the GMP of its logits)
    neg_score = (F.adaptive_max_pool2d(neg[:, None], 2).flatten(1) if negatives == "quadrants"
                 else neg.flatten(1).amax(1, keepdim=True))
    scores = torch.cat([pos_score, neg_score.flatten()]).float()
    labels = torch.cat([torch.ones_like(pos_score), torch.zeros_like(neg_score.flatten())]).float()
    return F.binary_cross_entropy_with_logits(scores, labels), torch.sigmoid(pos)  # Eq. 1


def kl_loss(log_pv: Tensor, log_pa: Tensor, direction: str = "paper") -> Tensor:
    """L_c (Eq. 7), averaged over the batch: ``paper`` is KL(p_v || p_a) = sum p_v (log p_v - log p_a); ``code`` is
    KL(p_a || p_v), what ``F.kl_div(log p_v, p_a)`` in the authors' code computes. ``(B, K)`` log-probabilities."""
    p, log_p, log_q = (log_pv.exp(), log_pv, log_pa) if direction == "paper" else (log_pa.exp(), log_pa, log_pv)
    return (p * (log_p - log_q)).sum(1).mean()


def localization_step(model: DSOLNet, batch: dict[str, Tensor], frontend: nn.Module,
                      negatives: str = "global") -> dict[str, Tensor]:
    """Stage 1's localization step: L_1 (Eq. 1) on ``image (B, 3, H, W)`` and waveforms ``audio (B, N)``."""
    fv = model.visual_features(batch["image"])
    ga = model.audio_features(first_example(frontend, batch["audio"]))
    loss, loc = localization_loss(model, fv, ga, negatives)
    return {"loss": loss, "loc_max": loc.detach().flatten(1).amax(1).float().mean()}


def classification_step(model: DSOLNet, batch: dict[str, Tensor], frontend: nn.Module,
                        labels: Tensor) -> dict[str, Tensor]:
    """Stage 1's classification step: cross-entropy of the visual (``GAP f(v)``) and audio (``g(a)``) classifiers
    against the pseudo-labels ``labels[batch["index"]]`` of the round."""
    fv = model.visual_features(batch["image"])
    ga = model.audio_features(first_example(frontend, batch["audio"]))
    v_logits, a_logits = model.classify(fv, ga)
    y = labels.to(v_logits.device)[batch["index"]]
    loss = F.cross_entropy(v_logits.float(), y) + F.cross_entropy(a_logits.float(), y)
    return {"loss": loss, "acc_visual": (v_logits.argmax(1) == y).float().mean(),
            "acc_audio": (a_logits.argmax(1) == y).float().mean()}


def matching_step(model: DSOLNet, batch: dict[str, Tensor], frontend: nn.Module, cfg: DSOLConfig) -> dict[str, Tensor]:
    """Stage 2's step: ``L_2 = L_c + lambda L_1`` (Eq. 8) with the class maps (Eq. 4), the sounding filter (Eq. 5,
    unless ``cfg.product`` is off), ``p_v`` (Eq. 6) and ``p_a`` from the frozen audio trunk and classifier (Eq. 7);
    ``use_l1`` / ``use_lc`` drop a term (Table 7)."""
    fv = model.visual_features(batch["image"])
    model.audio.eval()  # frozen: its BatchNorm statistics stay the stage-1 network's
    with torch.no_grad():
        ga = model.audio_features(first_example(frontend, batch["audio"]))
        log_pa = F.log_softmax(model.audio_classifier(ga).float(), dim=1)
    l1, loc = localization_loss(model, fv, ga, cfg.negatives)
    m = model.class_maps(fv)  # Eq. 4
    s = m * loc[:, None] if cfg.product else m  # Eq. 5
    log_pv = F.log_softmax(s.mean(dim=(-2, -1)).float(), dim=1)  # Eq. 6
    lc = kl_loss(log_pv, log_pa, cfg.kl)  # Eq. 7
    loss = (lc if cfg.use_lc else 0.0) + (cfg.lam * l1 if cfg.use_l1 else 0.0)  # Eq. 8
    agree = (log_pv.argmax(1) == log_pa.argmax(1)).float().mean()
    return {"loss": loss, "l_c": lc.detach(), "l_1": l1.detach(), "agreement": agree}


# ---------------------------------------------------------------------------------------------------- the dictionary


def _kmeans_pp(x: Tensor, k: int, restarts: int, generator: torch.Generator) -> Tensor:
    """k-means++ starting centers for ``restarts`` runs at once: ``x (N, C)`` -> ``(restarts, k, C)``."""
    n = x.shape[0]
    idx = torch.randint(n, (restarts, 1), generator=generator)
    d2 = (x[None] - x[idx[:, 0]][:, None]).pow(2).sum(-1).cpu()  # (R, N)
    for _ in range(k - 1):
        pick = torch.multinomial(d2.double().clamp_min(0) + 1e-30, 1, generator=generator)  # (R, 1)
        idx = torch.cat([idx, pick], 1)
        d2 = torch.minimum(d2, (x[None] - x[pick[:, 0]][:, None]).pow(2).sum(-1).cpu())
    return x[idx]


def dictionary_kmeans(o: Tensor, k: int, restarts: int = 4, iters: int = 50, seed: int = 0) -> Tensor:
    """The dictionary of Eq. 3: Lloyd's k-means (:func:`avlib.cluster.soft_kmeans` at beta = inf) on the object
    representations ``o (N, C)``, ``restarts`` k-means++ starts run as one batch, the run of lowest objective kept.
    Returns ``(k, C)`` (a cluster left empty gets the zero vector)."""
    if o.dim() != 2 or o.shape[0] < k:
        raise ValueError(f"dictionary_kmeans: need (N, C) features with N >= k = {k}; got {tuple(o.shape)}")
    x = o.float()
    init = _kmeans_pp(x, k, restarts, torch.Generator().manual_seed(seed))
    xs = x.expand(restarts, *x.shape)
    result = soft_kmeans(xs, k, beta=math.inf, iters=iters, init=init)  # Eq. 3, every restart at once
    return result.centers[kmeans_objective(xs, result.centers, result.assign).argmin()]


def nearest_keys(o: Tensor, keys: Tensor) -> Tensor:
    """The key of each representation: ``argmin_k ||o_i - d^k||`` (Eq. 3's assignment), ``(N, C)``, ``(K, C)`` ->
    ``(N,)``."""
    o, keys = o.float(), keys.float().to(o.device)
    return (keys.pow(2).sum(1)[None] - 2 * o @ keys.T).argmin(1)


def _chunks(data: Dataset, size: int) -> Iterator[dict[str, Tensor]]:
    """Batches of ``size`` items of ``data`` in order (tensors sliced directly for an in-memory set)."""
    if isinstance(data, StackDataset) and all(torch.is_tensor(t) for t in data.datasets.values()):
        for i in range(0, len(data), size):
            yield {k: t[i : i + size] for k, t in data.datasets.items()}
        return
    yield from torch.utils.data.DataLoader(data, batch_size=size, shuffle=False)


@torch.no_grad()
def object_features(model: DSOLNet, data: Dataset, frontend: nn.Module, threshold: float = 0.05, dilation: int = 0,
                    batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Eq. 2 over a whole set (eval mode): ``o (N, C)`` on the model's device and the items' true ``label (N,)`` on
    the CPU (-1 where unknown)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    feats, labels = [], []
    try:
        for chunk in _chunks(data, batch_size):
            fv = model.visual_features(chunk["image"].to(device))
            ga = model.audio_features(first_example(frontend, chunk["audio"].to(device)))
            loc = model.localization_map(model.embed_visual(fv), model.embed_audio(ga))
            feats.append(model.object_features(fv, loc, threshold, dilation).float())
            labels.append(chunk["label"].cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


class DSOLStep:
    """The training step of one DSOL stage, ``step(model, batch, generator=None)``, by ``cfg.phase``.

    ``cls`` and ``match`` stages need the dictionary of round ``cfg.dictionary_round``: at their first call, if the
    model's dictionary is of another round, the stage-1 set (``stage1()``, a Dataset of ``image``, ``audio``,
    ``index``, ``label``) is passed through the network (Eq. 2), clustered (Eq. 3) and the centers stored in the model
    (so a checkpoint carries them); a ``cls`` round then re-initialises both classifiers. Its pseudo-labels are the
    items' nearest keys, and the NMI of those against the true labels is logged with every step of the stage.
    """

    def __init__(self, cfg: DSOLConfig, frontend: nn.Module, stage1: Callable[[], Dataset] | None = None) -> None:
        if cfg.phase not in PHASES:
            raise ValueError(f"dsol: phase must be one of {PHASES}; got {cfg.phase!r}")
        self.cfg, self.frontend, self.stage1 = cfg, frontend, stage1
        self.labels: Tensor | None = None
        self.logged: dict[str, Tensor] = {}

    def prepare(self, model: DSOLNet) -> None:
        """Build (or read back) the stage's dictionary and pseudo-labels."""
        cfg = self.cfg
        source = None if self.stage1 is None else self.stage1()
        if source is None:
            raise RuntimeError("dsol: the classification and matching stages cluster the stage-1 set: build it "
                               "first (DSOL.train_data, as avlib.methods.train does) or pass stage1=")
        o, truth = object_features(model, source, self.frontend, cfg.mask_threshold, cfg.mask_dilation,
                                   cfg.batch_size)
        if int(model.dictionary_round) != cfg.dictionary_round:
            model.dictionary.copy_(dictionary_kmeans(o, cfg.n_keys, cfg.kmeans_restarts, cfg.kmeans_iters,
                                                     seed=cfg.dictionary_round))
            model.dictionary_round.fill_(cfg.dictionary_round)
            if cfg.phase == "cls":
                model.visual_classifier.reset_parameters()
                model.audio_classifier.reset_parameters()
        self.labels = nearest_keys(o, model.dictionary).cpu()
        known = truth >= 0
        nmi = metrics.normalized_mutual_info(truth[known], self.labels[known]) if bool(known.any()) else math.nan
        self.logged = {"nmi": torch.tensor(nmi)}

    def __call__(self, model: DSOLNet, batch: dict[str, Tensor],
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
        cfg = self.cfg
        if cfg.phase == "loc":
            return localization_step(model, batch, self.frontend, cfg.negatives)
        if self.labels is None:
            self.prepare(model)
        if cfg.phase == "cls":
            return {**classification_step(model, batch, self.frontend, self.labels), **self.logged}
        return {**matching_step(model, batch, self.frontend, cfg), **self.logged}


# ---------------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=8)
def _scenes(spec: str, seed: int, samples: int, size: int, resize: int, n_categories: int) -> dict[str, Tensor]:
    """Middle frames (eval transform), audio, labels and per-category targets of a world, cached per process."""
    world = SynthOrchestra(**json.loads(spec), seed=seed)
    transform = DSOLImageTransform(train=False, size=size, resize=resize)
    mid = world.num_frames // 2
    images, audio, labels, masks, delta = [], [], [], [], []
    for i in range(len(world)):
        scene = world.scene(i, frames=[mid])
        images.append(scene.frames[0])
        audio.append(fit_length(scene.audio, samples))
        labels.append(world.clip_label(i))
        m, d = class_aware_targets(scene.boxes[0], scene.categories, scene.sounding, n_categories,
                                   *scene.frames.shape[-2:])
        masks.append(m)
        delta.append(d)
    return {"image": transform(torch.stack(images)), "audio": torch.stack(audio), "label": torch.tensor(labels),
            "index": torch.arange(len(world)), "masks": _eval_geometry(torch.stack(masks), size, resize),
            "sounding": torch.stack(delta)}


def _eval_geometry(masks: Tensor, size: int, resize: int) -> Tensor:
    """Masks ``(B, C, H, W)`` through the eval image transform's geometry: resize to ``resize``, centre ``size``
    crop (nearest)."""
    up = F.interpolate(masks.float(), size=(resize, resize), mode="nearest")
    off = (resize - size) // 2
    return up[..., off : off + size, off : off + size] > 0.5


class DSOLClips(ClipPairs):
    """Items ``{"image", "audio", "index", "label"}`` of a clip directory's split (middle frame, DSOL transform;
    ``label`` from the manifest, -1 where it has none)."""

    def __init__(self, root: Path, split: str, cfg: DSOLConfig, train: bool) -> None:
        super().__init__(ClipDataset(root, split, sample_rate=int(cfg.audio["sample_rate"]), frames="middle"),
                         round(cfg.audio["seconds"] * cfg.audio["sample_rate"]),
                         DSOLImageTransform(train=train, size=cfg.image_size, resize=cfg.resize))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        label = self.clips.rows[i].get("label")
        return {**super().__getitem__(i), "index": torch.tensor(i), "label": torch.tensor(-1 if label is None
                                                                                          else int(label))}

    def boxed(self) -> bool:
        """Whether every clip has boxes, categories and sounding flags (real MUSIC clips have none)."""
        return all(r.get(k) is not None for r in self.clips.rows for k in ("boxes", "categories", "sounding"))

    def tensors(self, n_categories: int, targets: bool = True) -> dict[str, Tensor]:
        """Every item with its per-category targets (:func:`avlib.eval.class_aware.class_aware_targets`, from the
        manifest's ``boxes``, ``categories`` and ``sounding``), stacked, masks in the eval transform's geometry;
        ``targets=False``: the items alone."""
        rows: dict[str, list[Tensor]] = {k: [] for k in ("image", "audio", "index", "label", "masks", "sounding")}
        for i in range(len(self)):
            if not targets:
                for k, v in self[i].items():
                    rows[k].append(v)
                continue
            item = self.clips[i]
            if "boxes" not in item or "categories" not in item or "sounding" not in item:
                raise ValueError(f"clip {self.clips.clip_name(i)} has no boxes, categories and sounding flags: "
                                 "class-aware evaluation needs them")
            m, d = class_aware_targets(item["boxes"][0], item["categories"], item["sounding"], n_categories,
                                       *item["frames"].shape[-2:])
            rows["masks"].append(_eval_geometry(m[None], self.transform.size, self.transform.resize)[0])
            rows["sounding"].append(d)
            for k, v in self[i].items():
                rows[k].append(v)
        return {k: torch.stack(v) for k, v in rows.items() if v}


class DSOL(Method):
    name = "dsol"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def __init__(self) -> None:
        self._stage1: Dataset | None = None

    def model(self, cfg: DSOLConfig) -> DSOLNet:
        return DSOLNet(n_keys=cfg.n_keys, widths=cfg.widths, blocks=cfg.blocks, embed_dim=cfg.embed_dim,
                       class_map_affine=cfg.class_map_affine, visual_stem=cfg.visual_stem,
                       visual_strides=cfg.visual_strides)

    def step(self, cfg: DSOLConfig) -> DSOLStep:
        """The stage's :class:`DSOLStep`; its dictionary is built over the stage-1 set of the last
        :meth:`train_data` call (``avlib.methods.train`` builds a stage's data before its step)."""
        if not (cfg.use_l1 or cfg.use_lc):
            raise ValueError("dsol: stage 2 needs L_1 or L_c (use_l1 and use_lc are both off)")
        return DSOLStep(cfg, make_frontend(cfg.audio), stage1=lambda: self._stage1)

    def example_batch(self, cfg: DSOLConfig, n: int) -> dict[str, Tensor]:
        return {"image": DSOLImageTransform(size=cfg.image_size, resize=cfg.resize)(torch.rand(n, 3, cfg.resize,
                                                                                               cfg.resize)),
                "audio": 0.1 * torch.randn(n, round(cfg.audio["seconds"] * cfg.audio["sample_rate"])),
                "index": torch.arange(n), "label": torch.arange(n) % cfg.n_keys}

    def n_categories(self, cfg: DSOLConfig) -> int:
        """C, the number of true categories (the world's, else ``n_categories``, else K)."""
        if cfg.data is not None:
            return int(cfg.data["n_categories"])
        return cfg.n_categories or cfg.n_keys

    def stages(self, cfg: DSOLConfig) -> list[StagePlan]:
        """``loc1``, (``cls<r>``, ``loc<r>``) for r = 2 ... ``rounds``, ``match``; without ``alternate`` one ``loc``
        stage of ``rounds * round_steps`` steps, then ``match``."""
        def loc(name: str, steps: int) -> StagePlan:
            return StagePlan(name, cfg.replace(phase="loc", steps=steps, dictionary_round=0))

        if cfg.alternate:
            plans = [loc("loc1", cfg.round_steps)]
            for r in range(2, cfg.rounds + 1):
                plans += [StagePlan(f"cls{r}", cfg.replace(phase="cls", steps=cfg.cls_steps, dictionary_round=r)),
                          loc(f"loc{r}", cfg.round_steps)]
        else:
            plans = [loc("loc", cfg.rounds * cfg.round_steps)]
        return [*plans, StagePlan("match", cfg.replace(phase="match", steps=cfg.match_steps,
                                                        dictionary_round=cfg.rounds + 1))]

    def family_data(self, cfg: DSOLConfig, data: Path | None, seed: int, family: str, held_out: bool
                    ) -> dict[str, Tensor] | Dataset:
        """A family's scenes: from the config's world (training: ``seed``, the world's ``size``; held out: ``seed +
        1``, ``eval_size`` scenes) as cached tensors, or a clip directory's ``DATA/<family>`` (``train`` / ``test``
        split)."""
        if data is None:
            spec = {**cfg.data, "family": family, **({"size": cfg.eval_size} if held_out else {})}
            return _scenes(json.dumps(spec, sort_keys=True), seed + int(held_out),
                           round(cfg.audio["seconds"] * cfg.audio["sample_rate"]), cfg.image_size, cfg.resize,
                           self.n_categories(cfg))
        root = data / family
        if not (root / MANIFEST).is_file():
            raise FileNotFoundError(f"dsol reads {family} clips from {root}: it holds no {MANIFEST}")
        return DSOLClips(root, "test" if held_out else "train", cfg, train=not held_out)

    def train_data(self, cfg: DSOLConfig, data: Path | None, seed: int) -> Dataset:
        """Stage 1 (``loc``, ``cls``): solo scenes; stage 2 (``match``): ``multi_family`` scenes. The stage-1 set is
        also kept for the dictionary (:class:`DSOLStep`)."""
        solo = self.family_data(cfg, data, seed, "solo", held_out=False)
        self._stage1 = _items(solo)
        return self._stage1 if cfg.phase != "match" else _items(self.family_data(cfg, data, seed, cfg.multi_family,
                                                                                 held_out=False))

    # ------------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def maps(self, cfg: DSOLConfig, model: DSOLNet, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """On the CPU, in chunks (eval mode): ``loc`` ``(B, h, w)``, ``audio_free`` ``(B, h, w)`` (the map with the
        mean sound embedding of the inputs), ``objects`` ``(B, C_feat)`` (Eq. 2), and the test-time class-aware maps
        over the keys ``(B, K, h, w)``: ``class_aware`` (softmax over keys of ``s`` / T, or of ``m`` without the
        product) and ``class_aware_audio_free`` (softmax of ``m`` / T, from the image alone)."""
        was_training = model.training
        model.eval()
        device, frontend = model_device(model), make_frontend(cfg.audio)
        out: dict[str, list[Tensor]] = {k: [] for k in ("loc", "objects", "class_aware", "class_aware_audio_free",
                                                        "ev", "ea")}
        try:
            for i in range(0, inputs["image"].shape[0], cfg.batch_size):
                fv = model.visual_features(inputs["image"][i : i + cfg.batch_size].to(device))
                ga = model.audio_features(first_example(frontend, inputs["audio"][i : i + cfg.batch_size].to(device)))
                ev, ea = model.embed_visual(fv), model.embed_audio(ga)
                loc = model.localization_map(ev, ea)
                m = model.class_maps(fv)
                s = m * loc[:, None] if cfg.product else m
                t = cfg.test_temperature
                rows = {"loc": loc, "objects": model.object_features(fv, loc, cfg.mask_threshold, cfg.mask_dilation),
                        "class_aware": torch.softmax(s.float() * t, 1),
                        "class_aware_audio_free": torch.softmax(m.float() * t, 1), "ev": ev, "ea": ea}
                for k, v in rows.items():
                    out[k].append(v.float().cpu())
            joined = {k: torch.cat(v) for k, v in out.items()}
            ev, ea = joined.pop("ev"), joined.pop("ea")
            mean_sound = F.normalize(ea.mean(0, keepdim=True), dim=1).expand_as(ea)
            joined["audio_free"] = torch.cat([model.localization_map(e.to(device), a.to(device)).float().cpu()
                                              for e, a in zip(ev.split(cfg.batch_size),
                                                              mean_sound.split(cfg.batch_size), strict=True)])
        finally:
            model.train(was_training)
        return joined

    def evaluate(self, cfg: DSOLConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        """Held-out solo clips: single-source IoU@0.5 / AUC (each map cut at 0.1 x its maximum) beside the trivial
        baselines, NMI of the object representations (k-means with K clusters, and the nearest keys), the keys'
        categories (Hungarian); held-out ``mosaic`` and ``duet`` scenes: class-aware CIoU@0.3 / AUC / NSA under both
        protocols (:data:`avlib.eval.class_aware.PROTOCOLS`) beside the centred box, the whole image, a random map
        and DSOL's own audio-free class maps."""
        c = self.n_categories(cfg)
        solo = _tensors(self.family_data(cfg, data, seed, "solo", held_out=True), c, need=False)
        out = self.maps(cfg, model, solo)
        keys = nearest_keys(out["objects"], model.dictionary.cpu())
        known = solo["label"] >= 0
        key_cat = match_keys(keys[known], solo["label"][known], cfg.n_keys, c)
        box = solo["masks"].any(1) if "masks" in solo else None
        size = None if box is None else tuple(box.shape[-2:])
        single = NO_BOXES if box is None else {"dsol": metrics.dsol_iou_auc(upsample_maps(out["loc"], size), box),
                  "audio-free (mean sound)": metrics.dsol_iou_auc(upsample_maps(out["audio_free"], size), box),
                  "random map": metrics.dsol_iou_auc(metrics.random_map(box.shape[0], *size, seed=seed), box),
                  "centred box (half the image)": metrics.dsol_iou_auc(metrics.center_box_map(box.shape[0], *size),
                                                                       box),
                  "whole image": metrics.dsol_iou_auc(torch.ones(box.shape), box)}
        report: dict[str, Any] = {
            "solo_clips": int(solo["image"].shape[0]), "single_source": single,
            "nmi_kmeans": metrics.kmeans_nmi(out["objects"][known], solo["label"][known], cfg.n_keys, seed=seed),
            "nmi_keys": metrics.normalized_mutual_info(solo["label"][known], keys[known]),
            "key_to_category": key_cat.tolist(), "key_accuracy": key_accuracy(keys[known], solo["label"][known],
                                                                               key_cat),
            "dictionary_round": int(model.dictionary_round), "protocols": PROTOCOLS}
        for family in ("mosaic", "duet"):
            if data is not None and not (data / family / MANIFEST).is_file():
                continue
            multi = _tensors(self.family_data(cfg, data, seed, family, held_out=True), c, need=False)
            if "masks" not in multi:
                report[family] = NO_BOXES
                continue
            keep = multi["sounding"].any(1) & ~multi["sounding"].all(1)
            multi = {k: v[keep] for k, v in multi.items()}
            maps = self.maps(cfg, model, multi)
            rows = {"dsol": category_maps(maps["class_aware"], key_cat, c),
                    "audio-free (class maps without the sound)": category_maps(maps["class_aware_audio_free"],
                                                                               key_cat, c)}
            report[family] = {"scenes": int(keep.sum()),
                              **{name: class_aware_report(m, multi["masks"], multi["sounding"])
                                 for name, m in rows.items()},
                              **class_aware_baselines(multi["masks"], multi["sounding"], seed)}
        return report


def _items(source: dict[str, Tensor] | Dataset) -> Dataset:
    """A training Dataset of ``image``, ``audio``, ``index``, ``label`` items."""
    if isinstance(source, dict):
        return StackDataset(**{k: source[k] for k in ("image", "audio", "index", "label")})
    return source


def _tensors(source: dict[str, Tensor] | DSOLClips, n_categories: int, need: bool = True) -> dict[str, Tensor]:
    """Held-out tensors (``masks`` and ``sounding`` included) of a world or of a clip directory's test split;
    ``need=False``: without them where the clips have no boxes."""
    return source if isinstance(source, dict) else source.tensors(n_categories, need or source.boxed())


register(DSOL())
