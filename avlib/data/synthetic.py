"""SynthOrchestra: a procedural audio-visual world of instruments, with full ground truth.

Every scene is a short video (25 fps) of instruments drawn on a textured background, with a mono soundtrack in which
some of the visible instruments play. Each category has a *look* (shape, texture, colour, size range) and a *sound*
(harmonic profile, envelope — bowed, plucked, blown, struck —, pitch range). Attribute ranges overlap across categories
(hues, sizes, pitches), so no single pixel colour or frequency bin names a category: a model must combine shape,
texture, timbre and envelope, which is what the papers' networks learn from real video.

Scenes are deterministic functions of ``(seed, index)`` and are generated with vectorised numpy, so quick-scale chapters
draw fresh scenes on the fly. Frames can be rendered selectively (``world.scene(i, frames=[k])``), which is all the AVC
task needs.

Scene families (``family=``): ``solo`` (one instrument, sounding), ``duet`` (two, both sounding), ``mosaic``
(MUSIC-Synthetic style 2×2 grid of four solo clips of different categories, two of them sounding; DSOL, Hu et al. 2020,
Sec. 4.1) and the curriculum levels ``c1`` … ``c4`` with 1 … 4 sounding instruments (CAVL, Hu et al. 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avlib.data.ontology import Ontology
from avlib.metrics import boxes_to_masks

FAMILIES = ("solo", "duet", "mosaic", "c1", "c2", "c3", "c4")
_FAMILY_COUNTS = {  # family -> (sounding, silent) visible objects
    "solo": (1, 0),
    "duet": (2, 0),
    "mosaic": (2, 2),
    "c1": (1, 0),
    "c2": (2, 0),
    "c3": (3, 0),
    "c4": (4, 0),
}
ENVELOPES = ("bowed", "plucked", "blown", "struck")
SHAPES = ("ellipse", "ring", "bar", "tube", "flare", "slab", "drum", "circle")
TEXTURES = ("stripes_h", "stripes_v", "stripes_d", "checks", "dots", "plain")


@dataclass(frozen=True)
class Category:
    """One instrument category: its place in the ontology, its look and its sound.

    ``hue`` is the centre of a hue range of half-width ``hue_jitter`` (hues in [0, 1)); ``size`` is the range of the
    object's half-extent as a fraction of the image (or mosaic cell) side; ``midi`` the pitch range of its notes;
    ``rolloff`` the exponent of the harmonic amplitudes ``h^-rolloff``; ``odd_only`` keeps odd harmonics
    (clarinet-like); ``partials`` gives inharmonic partial ratios instead of ``1, 2, 3, …``; ``noise`` the level of the
    breath / bow / skin noise, ``noise_band`` its centre frequency in Hz; ``pitch_drop`` the initial upward pitch bend
    of struck drums.
    """

    name: str
    path: tuple[str, ...]
    shape: str
    texture: str
    hue: float
    size: tuple[float, float]
    envelope: str
    midi: tuple[float, float]
    rolloff: float
    odd_only: bool = False
    partials: tuple[float, ...] | None = None
    noise: float = 0.02
    noise_band: float = 3000.0
    pitch_drop: float = 0.0
    hue_jitter: float = 0.05
    formant: float = 1500.0


_NAMED = (
    Category("violin", ("strings", "bowed", "violin"), "ellipse", "stripes_v", 0.07, (0.20, 0.34), "bowed",
             (55, 88), 1.0, noise=0.03, noise_band=4000, formant=2800),
    Category("cello", ("strings", "bowed", "cello"), "ellipse", "stripes_h", 0.04, (0.26, 0.42), "bowed",
             (36, 69), 1.1, noise=0.03, noise_band=1500, formant=900),
    Category("guitar", ("strings", "plucked", "guitar"), "ring", "plain", 0.10, (0.22, 0.38), "plucked",
             (40, 76), 1.3, noise=0.0, formant=1200),
    Category("flute", ("winds", "woodwind", "flute"), "bar", "dots", 0.58, (0.22, 0.38), "blown",
             (60, 96), 2.6, noise=0.15, noise_band=5000, formant=2000),
    Category("clarinet", ("winds", "woodwind", "clarinet"), "tube", "checks", 0.66, (0.22, 0.38), "blown",
             (50, 86), 0.9, odd_only=True, noise=0.04, noise_band=3500, formant=1600),
    Category("trumpet", ("winds", "brass", "trumpet"), "flare", "stripes_d", 0.13, (0.20, 0.36), "blown",
             (52, 82), 0.6, noise=0.02, noise_band=3000, formant=2500),
    Category("xylophone", ("percussion", "pitched", "xylophone"), "slab", "stripes_v", 0.95, (0.22, 0.38), "struck",
             (65, 96), 1.0, partials=(1.0, 3.93, 9.0, 14.2), noise=0.05, noise_band=6000, formant=3000),
    Category("drum", ("percussion", "unpitched", "drum"), "drum", "checks", 0.01, (0.24, 0.40), "struck",
             (36, 55), 1.5, partials=(1.0, 1.59, 2.14, 2.65), noise=1.2, noise_band=1800, pitch_drop=0.6,
             formant=500),
    Category("piano", ("keyboard", "acoustic", "piano"), "slab", "stripes_h", 0.62, (0.24, 0.40), "plucked",
             (40, 90), 1.2, noise=0.0, formant=1000),
    Category("trombone", ("winds", "brass", "trombone"), "flare", "dots", 0.16, (0.24, 0.40), "blown",
             (40, 72), 0.7, noise=0.02, noise_band=2000, formant=1200),
    Category("banjo", ("strings", "plucked", "banjo"), "ring", "checks", 0.12, (0.20, 0.34), "plucked",
             (48, 84), 0.9, noise=0.01, formant=2500),
    Category("marimba", ("percussion", "pitched", "marimba"), "slab", "plain", 0.92, (0.26, 0.42), "struck",
             (45, 84), 1.4, partials=(1.0, 4.0, 9.8), noise=0.02, noise_band=2000, formant=1200),
)


def default_categories(n: int) -> list[Category]:
    """The first ``n`` categories: twelve named instruments, then procedural variants of them (``name_v2`` …).

    Variants keep the family (ontology subtree, envelope) of the instrument they derive from and draw new looks and
    timbres from a fixed generator, so the same ``n`` always gives the same categories whatever the scene seed.
    """
    if n < 1:
        raise ValueError(f"n_categories must be >= 1; got {n}")
    cats = list(_NAMED[:n])
    rng = np.random.default_rng(20240)
    k = len(cats)
    while len(cats) < n:
        base = _NAMED[k % len(_NAMED)]
        version = k // len(_NAMED) + 1
        name = f"{base.name}_v{version}"
        lo = float(rng.uniform(36, 70))
        cats.append(Category(
            name, (*base.path[:-1], name), str(rng.choice(SHAPES)), str(rng.choice(TEXTURES)), float(rng.uniform()),
            base.size, base.envelope, (lo, lo + float(rng.uniform(18, 30))), float(rng.uniform(0.6, 2.2)),
            odd_only=bool(rng.uniform() < 0.2), partials=base.partials, noise=base.noise, noise_band=base.noise_band,
            pitch_drop=base.pitch_drop, formant=float(rng.uniform(500, 3500)),
        ))
        k += 1
    return cats


@dataclass
class Scene:
    """One generated clip with its ground truth.

    Attributes:
        frames: ``(T, 3, H, W)`` float32 in [0, 1], the rendered frames (``frame_indices`` says which).
        audio: ``(N,)`` float32 mono mixture (sources + background noise + optional frame artifact).
        sample_rate: audio sample rate in Hz.
        fps: video frame rate.
        boxes: ``(T, n_obj, 4)`` float32 xyxy boxes in pixels (x1, y1 exclusive), one per visible object and frame.
        categories: ``(n_obj,)`` int64 category of each visible object.
        sounding: ``(n_obj,)`` bool, whether the object is heard in the audio.
        sources: ``(n_src, N)`` float32, each sounding source's own waveform after mixing gain
            (``audio = sources.sum(0) + noise + artifact``).
        source_categories: ``(n_src,)`` int64.
        source_objects: ``(n_src,)`` int64 index of the visible object that makes the sound, -1 when off-screen.
        masks: ``(T, n_obj, H, W)`` bool, pixels where each object is visible (occlusion applied).
        frame_indices: ``(T,)`` int64, the video frame number of each rendered frame (time ``k / fps``).
        num_frames: number of frames in the whole clip (``T`` equals it unless frames were selected).
        family: the scene family (``solo``, ``duet``, ``mosaic``, ``c1`` … ``c4``).
        index: the scene's index in its world.
    """

    frames: torch.Tensor
    audio: torch.Tensor
    sample_rate: int
    fps: float
    boxes: torch.Tensor
    categories: torch.Tensor
    sounding: torch.Tensor
    sources: torch.Tensor
    source_categories: torch.Tensor
    source_objects: torch.Tensor
    masks: torch.Tensor
    frame_indices: torch.Tensor
    num_frames: int
    family: str
    index: int

    @property
    def duration(self) -> float:
        """Clip length in seconds (audio samples / sample rate)."""
        return self.audio.shape[-1] / self.sample_rate

    def _row(self, t: int) -> int:
        hits = (self.frame_indices == int(t)).nonzero()
        if hits.numel() == 0:
            rendered = self.frame_indices.tolist()
            raise IndexError(f"scene {self.index}: frame {t} was not rendered (rendered: {rendered})")
        return int(hits[0, 0])

    def frame(self, t: int) -> torch.Tensor:
        """The ``(3, H, W)`` frame with video frame number ``t``."""
        return self.frames[self._row(t)]

    def sounding_mask(self, t: int, kind: str = "box") -> torch.Tensor:
        """``(H, W)`` bool ground truth of where sound comes from at frame ``t``.

        ``kind="box"``: union of the sounding objects' boxes (what cIoU annotations are); ``kind="shape"``: union of
        their visible pixels.
        """
        row = self._row(t)
        h, w = self.frames.shape[-2:]
        snd = self.sounding
        if kind == "shape":
            return self.masks[row][snd].any(0) if snd.any() else torch.zeros(h, w, dtype=torch.bool)
        if kind != "box":
            raise ValueError(f"sounding_mask: kind must be 'box' or 'shape'; got {kind!r}")
        return boxes_to_mask(self.boxes[row][snd], h, w).any(0)

    def object_masks(self, t: int, kind: str = "box") -> torch.Tensor:
        """``(n_obj, H, W)`` bool per-object ground truth at frame ``t`` (boxes or visible pixels)."""
        row = self._row(t)
        h, w = self.frames.shape[-2:]
        if kind == "shape":
            return self.masks[row]
        if kind != "box":
            raise ValueError(f"object_masks: kind must be 'box' or 'shape'; got {kind!r}")
        return boxes_to_mask(self.boxes[row], h, w)


def boxes_to_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(..., 4)`` xyxy pixel boxes → ``(..., H, W)`` bool masks (pixel centres inside the box;
    :func:`avlib.metrics.boxes_to_masks`)."""
    return boxes_to_masks(boxes, height, width).bool()


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB; inputs broadcast, output has a trailing axis of 3."""
    h = np.mod(h, 1.0)
    k = np.mod(np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0, 6.0)
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of one shape in object coordinates ``u, v`` (the shape fits in ``[-1, 1]²``)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "ellipse":
        return (u / 0.62) ** 2 + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.2)
    if shape == "bar":
        return (au <= 1.0) & (av <= 0.32)
    if shape == "tube":
        return (av <= 1.0) & (au <= 0.22 + 0.3 * np.clip(v, 0.0, 1.0) ** 3)
    if shape == "flare":
        return (av <= 1.0) & (au <= 0.16 + 0.84 * np.clip((v + 1.0) / 2.0, 0.0, 1.0) ** 2.5)
    if shape == "slab":
        return (au <= 1.0) & (av <= 0.7)
    if shape == "drum":
        return (au <= 0.95) & (av <= 0.8) & (au + 0.5 * av <= 1.15)
    if shape == "circle":
        return u * u + v * v <= 1.0
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """Texture intensity in [0, 1] in object coordinates, with the object's own stripe frequency and phase."""
    f = np.float32(np.pi * freq)
    if texture == "stripes_h":
        return 0.5 + 0.5 * np.sin(f * v + phase)
    if texture == "stripes_v":
        return 0.5 + 0.5 * np.sin(f * u + phase)
    if texture == "stripes_d":
        return 0.5 + 0.5 * np.sin(f * 0.7071 * (u + v) + phase)
    if texture == "checks":
        return 0.5 + 0.5 * np.sign(np.sin(f * u + phase) * np.sin(f * v + phase))
    if texture == "dots":
        fu = np.mod(freq * u / 2 + phase, 1.0) - 0.5
        fv = np.mod(freq * v / 2, 1.0) - 0.5
        return np.exp(-(fu * fu + fv * fv) / 0.03)
    if texture == "plain":
        return 0.65 + 0.3 * v
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def _smooth_noise(rng: np.random.Generator, n: int, size: int, grid: int, channels: int) -> np.ndarray:
    """``(n, channels, size, size)`` smooth random fields: a ``grid × grid`` random lattice, bilinearly upsampled."""
    lattice = rng.standard_normal((n, channels, grid, grid)).astype(np.float32)
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = (pos - lo).astype(np.float32)
    interp = np.zeros((size, grid), dtype=np.float32)  # (size, grid) bilinear interpolation matrix
    interp[np.arange(size), lo] = 1 - frac
    interp[np.arange(size), lo + 1] += frac
    return interp @ lattice @ interp.T  # (size, grid) · (n, c, grid, grid) · (grid, size)


class SynthOrchestra:
    """A deterministic procedural audio-visual world: ``world[i]`` is the :class:`Scene` for ``(seed, i)``.

    Args:
        n_categories: number of instrument categories K (first 12 named, then procedural variants).
        family: a scene family from ``FAMILIES`` or a sequence of them (each scene then draws one uniformly).
        size: number of scenes (``len(world)``); indices ``0 … size-1``.
        image_size: side of the square frames in pixels.
        sample_rate: audio sample rate in Hz (16 kHz and 48 kHz are the papers' rates).
        duration: clip length in seconds.
        fps: video frame rate (25 in the papers' data).
        n_silent: extra visible but silent objects per scene (not for ``mosaic``, which always has two).
        offscreen_prob: probability that a scene gets one extra sound source that is not visible.
        empty_frame_prob: probability that a scene shows no object at all while its sources play (album covers).
        noise_level: RMS of the pink background noise added to the mixture (0 = none).
        frame_artifact: amplitude of a tiny click at every video-frame boundary (``k * sample_rate / fps``), the kind
            of periodic encoding artifact that lets a network spot frame-aligned audio (Objects that Sound, Sec. 3.3);
            0 (the default) turns it off.
        motion: objects drift slowly and wobble; boxes then change per frame.
        pixel_noise: standard deviation of per-frame sensor noise.
        seed: world seed; scene ``i`` depends only on ``(seed, i)`` and the options above.
    """

    def __init__(
        self,
        n_categories: int = 8,
        family: str | Sequence[str] = "solo",
        size: int = 1000,
        image_size: int = 64,
        sample_rate: int = 16000,
        duration: float = 2.0,
        fps: float = 25.0,
        n_silent: int = 0,
        offscreen_prob: float = 0.0,
        empty_frame_prob: float = 0.0,
        noise_level: float = 0.0,
        frame_artifact: float = 0.0,
        motion: bool = True,
        pixel_noise: float = 0.02,
        seed: int = 0,
    ) -> None:
        fams = (family,) if isinstance(family, str) else tuple(family)
        bad = [f for f in fams if f not in FAMILIES]
        if not fams or bad:
            raise ValueError(f"family must be one of {FAMILIES} (or a sequence of them); got {family!r}")
        for name, val, lo in (("size", size, 1), ("image_size", image_size, 8), ("sample_rate", sample_rate, 1000)):
            if int(val) != val or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}; got {val!r}")
        if not duration > 0 or not fps > 0:
            raise ValueError(f"duration and fps must be positive; got duration={duration!r}, fps={fps!r}")
        if n_silent < 0:
            raise ValueError(f"n_silent must be >= 0; got {n_silent}")
        for name, p in (("offscreen_prob", offscreen_prob), ("empty_frame_prob", empty_frame_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {p!r}")
        levels = {"noise_level": noise_level, "frame_artifact": frame_artifact, "pixel_noise": pixel_noise}
        for name, val in levels.items():
            if val < 0:
                raise ValueError(f"{name} must be >= 0; got {val!r}")
        self.categories = default_categories(int(n_categories))
        if "mosaic" in fams and len(self.categories) < 4:
            raise ValueError(f"mosaic scenes need 4 distinct categories; n_categories={n_categories}")
        self.families = fams
        self.size = int(size)
        self.image_size = int(image_size)
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self.fps = float(fps)
        self.n_silent = int(n_silent)
        self.offscreen_prob = float(offscreen_prob)
        self.empty_frame_prob = float(empty_frame_prob)
        self.noise_level = float(noise_level)
        self.frame_artifact = float(frame_artifact)
        self.motion = bool(motion)
        self.pixel_noise = float(pixel_noise)
        self.seed = int(seed)
        self.ontology = Ontology([c.path for c in self.categories])
        self._cat_table = self._category_arrays()

    # ------------------------------------------------------------------ basic properties
    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def num_samples(self) -> int:
        """Audio samples per clip."""
        return int(round(self.duration * self.sample_rate))

    @property
    def num_frames(self) -> int:
        """Video frames per clip (frame ``k`` shows time ``k / fps``)."""
        return max(1, int(np.floor(self.duration * self.fps + 1e-9)))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Scene:
        return self.scene(index)

    def __repr__(self) -> str:
        return (f"SynthOrchestra(K={self.n_categories}, family={self.families}, size={self.size}, "
                f"image={self.image_size}px, audio={self.sample_rate} Hz x {self.duration} s, fps={self.fps}, "
                f"seed={self.seed})")

    def _category_arrays(self) -> dict[str, np.ndarray]:
        cats = self.categories
        max_p = max(len(c.partials) if c.partials else 0 for c in cats)
        partials = np.zeros((len(cats), max(max_p, 1)), dtype=np.float64)
        for k, c in enumerate(cats):
            if c.partials:
                partials[k, : len(c.partials)] = c.partials
        return {
            "hue": np.array([c.hue for c in cats]),
            "hue_jitter": np.array([c.hue_jitter for c in cats]),
            "size": np.array([c.size for c in cats]),
            "envelope": np.array([ENVELOPES.index(c.envelope) for c in cats]),
            "midi": np.array([c.midi for c in cats]),
            "rolloff": np.array([c.rolloff for c in cats]),
            "odd_only": np.array([c.odd_only for c in cats]),
            "n_partials": np.array([len(c.partials) if c.partials else 0 for c in cats]),
            "partials": partials,
            "noise": np.array([c.noise for c in cats]),
            "noise_band": np.array([c.noise_band for c in cats]),
            "pitch_drop": np.array([c.pitch_drop for c in cats]),
            "formant": np.array([c.formant for c in cats]),
        }

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """Generator of random stream ``stream`` (0: layout, 1: sensor noise) of scene ``index``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, index, stream]))

    # ------------------------------------------------------------------ scene layout
    def layout(self, index: int) -> dict:
        """The scene's random choices (family, objects, sources, positions, colours), drawn from ``(seed, index)``."""
        if not 0 <= int(index) < self.size:
            raise IndexError(f"scene index {index} is outside 0..{self.size - 1}")
        rng = self._rng(int(index), 0)
        tab = self._cat_table
        family = self.families[int(rng.integers(len(self.families)))] if len(self.families) > 1 else self.families[0]
        n_snd, n_sil = _FAMILY_COUNTS[family]
        if family != "mosaic":
            n_sil += self.n_silent
        n_obj = n_snd + n_sil
        k = self.n_categories
        cats = rng.choice(k, size=n_obj, replace=n_obj > k)
        sounding = np.zeros(n_obj, dtype=bool)
        sounding[rng.permutation(n_obj)[:n_snd]] = True
        empty = rng.uniform() < self.empty_frame_prob
        offscreen = rng.uniform() < self.offscreen_prob
        src_cats = cats[sounding]
        src_objs = np.flatnonzero(sounding)
        if offscreen:
            src_cats = np.append(src_cats, rng.integers(k))
            src_objs = np.append(src_objs, -1)
        if empty:
            src_objs = np.full_like(src_objs, -1)
            cats, sounding = cats[:0], sounding[:0]
            n_obj = 0

        s = self.image_size
        # placement: objects go to distinct cells of a jittered grid (2x2 up to four objects, 3x3 beyond); the mosaic
        # is the 2x2 grid itself with one object per quadrant, each quadrant with its own background.
        if family == "mosaic":
            grid, cells = 2, np.arange(4)[:n_obj]
        elif n_obj <= 1:
            grid, cells = 1, np.zeros(n_obj, dtype=int)
        else:
            grid = 2 if n_obj <= 4 else 3
            cells = rng.permutation(grid * grid)[:n_obj]
        cell = s / grid
        frac = rng.uniform(size=n_obj)
        radius = (tab["size"][cats, 0] + frac * (tab["size"][cats, 1] - tab["size"][cats, 0])) * cell
        radius *= 1.0 if grid == 1 else 1.25
        margin = radius * 1.05
        lo_x = (cells % grid) * cell + margin
        lo_y = (cells // grid) * cell + margin
        span = np.maximum(cell - 2 * margin, 0.0)
        cx0 = lo_x + rng.uniform(size=n_obj) * span
        cy0 = lo_y + rng.uniform(size=n_obj) * span
        motion = 1.0 if self.motion else 0.0
        return {
            "family": family,
            "categories": cats.astype(np.int64),
            "sounding": sounding,
            "source_categories": src_cats.astype(np.int64),
            "source_objects": src_objs.astype(np.int64),
            "empty": bool(empty),
            "grid": grid,
            "cells": cells,
            "center": np.stack([cx0, cy0], -1),
            "velocity": motion * rng.uniform(-0.06, 0.06, size=(n_obj, 2)) * cell,  # pixels per second
            "wobble": motion * rng.uniform(0.0, 0.03, size=(n_obj, 2)) * cell,
            "wobble_freq": rng.uniform(0.5, 2.0, size=(n_obj, 2)),
            "wobble_phase": rng.uniform(0, 2 * np.pi, size=(n_obj, 2)),
            "radius": radius,
            "aspect": rng.uniform(0.85, 1.15, size=n_obj),
            "angle": rng.uniform(-0.3, 0.3, size=n_obj),
            "hue": tab["hue"][cats] + rng.uniform(-1, 1, size=n_obj) * tab["hue_jitter"][cats],
            "sat": rng.uniform(0.45, 0.95, size=n_obj),
            "val": rng.uniform(0.55, 1.0, size=n_obj),
            "tex_freq": rng.uniform(2.0, 5.0, size=n_obj),
            "tex_phase": rng.uniform(0, 2 * np.pi, size=n_obj),
            "bg_hue": rng.uniform(size=grid * grid if family == "mosaic" else 1),
            "bg_sat": rng.uniform(0.05, 0.5, size=grid * grid if family == "mosaic" else 1),
            "bg_val": rng.uniform(0.25, 0.85, size=grid * grid if family == "mosaic" else 1),
            "bg_seed": int(rng.integers(2**31)),
            "audio_seed": int(rng.integers(2**31)),
        }

    def _centers(self, lay: dict, times: np.ndarray) -> np.ndarray:
        """``(T, n_obj, 2)`` object centres at ``times`` seconds, kept inside each object's cell."""
        t = times[:, None, None]
        c = lay["center"][None] + lay["velocity"][None] * t
        c = c + lay["wobble"][None] * np.sin(2 * np.pi * lay["wobble_freq"][None] * t + lay["wobble_phase"][None])
        grid, cell = lay["grid"], self.image_size / lay["grid"]
        margin = (lay["radius"] * 1.05)[None, :, None]
        lo = np.stack([(lay["cells"] % grid) * cell, (lay["cells"] // grid) * cell], -1)[None] + margin
        hi = lo - 2 * margin + cell
        return np.clip(c, lo, np.maximum(lo, hi))

    # ------------------------------------------------------------------ rendering
    def render_frames(self, index: int, frames: Sequence[int] | None = None, lay: dict | None = None) -> dict:
        """Render the requested video frames of scene ``index`` (all by default).

        Returns a dict with ``frames (T,3,H,W)``, ``boxes (T,n,4)``, ``masks (T,n,H,W)``, ``frame_indices (T,)`` as
        numpy arrays. A frame is identical whichever other frames are requested with it.
        """
        lay = self.layout(index) if lay is None else lay
        n_total = self.num_frames
        idx = np.arange(n_total) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_total):
            raise IndexError(f"scene {index}: frames must lie in 0..{n_total - 1}; got {idx.tolist()}")
        s, n_t, n_obj = self.image_size, idx.size, lay["categories"].size
        times = idx / self.fps

        # textured background: smooth colour field + a fine random pattern, per mosaic cell when tiled
        rng_bg = np.random.default_rng(lay["bg_seed"])
        n_bg = lay["bg_hue"].size
        cell_px = s // lay["grid"] if lay["family"] == "mosaic" else s
        field_ = _smooth_noise(rng_bg, n_bg, cell_px, 5, 3) * 0.08 + _smooth_noise(rng_bg, n_bg, cell_px, 17, 1) * 0.06
        base = _hsv_to_rgb(lay["bg_hue"], lay["bg_sat"], lay["bg_val"])  # (n_bg, 3)
        bg = np.clip(base[:, :, None, None] + field_, 0, 1).astype(np.float32)
        if n_bg > 1:  # tile the 2x2 mosaic backgrounds
            bg = bg.reshape(2, 2, 3, cell_px, cell_px).transpose(2, 0, 3, 1, 4).reshape(3, 2 * cell_px, 2 * cell_px)
            if bg.shape[-1] != s:
                bg = np.pad(bg, ((0, 0), (0, s - bg.shape[-2]), (0, s - bg.shape[-1])), mode="edge")
        else:
            bg = bg[0]
        img = np.broadcast_to(bg, (n_t, 3, s, s)).copy()

        masks = np.zeros((n_t, n_obj, s, s), dtype=bool)
        boxes = np.zeros((n_t, n_obj, 4), dtype=np.float32)
        if n_obj and n_t:
            c = self._centers(lay, times).astype(np.float32)  # (T, n, 2)
            pix = np.arange(s, dtype=np.float32) + 0.5
            rgb = _hsv_to_rgb(lay["hue"], lay["sat"], lay["val"]).astype(np.float32)  # (n, 3)
            for j in range(n_obj):  # paint back to front; each object only inside the window its trajectory covers
                cat = self.categories[int(lay["categories"][j])]
                r = np.float32(lay["radius"][j])
                reach = 1.7 * r  # covers rotation and aspect jitter
                x0 = int(max(0, np.floor(c[:, j, 0].min() - reach)))
                x1 = int(min(s, np.ceil(c[:, j, 0].max() + reach)))
                y0 = int(max(0, np.floor(c[:, j, 1].min() - reach)))
                y1 = int(min(s, np.ceil(c[:, j, 1].max() + reach)))
                dx = pix[None, None, x0:x1] - c[:, j, 0, None, None]  # (T, 1, w)
                dy = pix[None, y0:y1, None] - c[:, j, 1, None, None]  # (T, h, 1)
                cos, sin = np.float32(np.cos(lay["angle"][j])), np.float32(np.sin(lay["angle"][j]))
                u = (dx * cos + dy * sin) / (r * np.float32(lay["aspect"][j]))
                v = (dy * cos - dx * sin) / r
                inside = _shape_mask(cat.shape, u, v)  # (T, h, w)
                shade = 0.55 + 0.45 * _texture(cat.texture, u, v, float(lay["tex_freq"][j]), float(lay["tex_phase"][j]))
                np.copyto(img[:, :, y0:y1, x0:x1], rgb[j][None, :, None, None] * shade[:, None], where=inside[:, None])
                masks[:, :j, y0:y1, x0:x1] &= ~inside[:, None]
                masks[:, j, y0:y1, x0:x1] = inside
            rows, cols = masks.any(-1), masks.any(-2)  # (T, n, H), (T, n, W)
            present = rows.any(-1)
            boxes[..., 0] = np.argmax(cols, -1)
            boxes[..., 1] = np.argmax(rows, -1)
            boxes[..., 2] = s - np.argmax(cols[..., ::-1], -1)
            boxes[..., 3] = s - np.argmax(rows[..., ::-1], -1)
            boxes[~present] = 0.0
        if self.pixel_noise > 0 and n_t:
            # sensor noise: frame k reads a window of one random buffer starting 61·k values in (a strided view, no
            # copy), so a frame's noise does not depend on which other frames are rendered
            buffer = self._rng(int(index), 1).standard_normal(3 * s * s + 61 * n_total, dtype=np.float32)
            item = buffer.itemsize
            noise = np.lib.stride_tricks.as_strided(buffer, shape=(n_total, 3 * s * s), strides=(61 * item, item),
                                                    writeable=False)
            flat = img.reshape(n_t, 3 * s * s)
            flat += np.float32(self.pixel_noise) * noise[idx]
        return {"frames": np.clip(img, 0.0, 1.0, out=img), "boxes": boxes, "masks": masks,
                "frame_indices": idx}

    def render_audio(self, index: int, lay: dict | None = None) -> dict:
        """Synthesize the soundtrack of scene ``index``: ``audio (N,)`` and ``sources (n_src, N)`` numpy float32."""
        lay = self.layout(index) if lay is None else lay
        return synthesize_sources(
            lay["source_categories"], self._cat_table, self.sample_rate, self.num_samples,
            np.random.default_rng(lay["audio_seed"]), self.noise_level, self.frame_artifact, self.fps,
        )

    def scene(self, index: int, frames: Sequence[int] | None = None) -> Scene:
        """Scene ``index`` with all frames, or only the video frames listed in ``frames``."""
        if isinstance(index, (np.integer, torch.Tensor)):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"scene index must be an int; got {type(index).__name__}")
        if index < 0:
            index += self.size
        lay = self.layout(index)
        vis = self.render_frames(index, frames, lay)
        snd = self.render_audio(index, lay)
        return Scene(
            frames=torch.from_numpy(vis["frames"]),
            audio=torch.from_numpy(snd["audio"]),
            sample_rate=self.sample_rate,
            fps=self.fps,
            boxes=torch.from_numpy(vis["boxes"]),
            categories=torch.from_numpy(lay["categories"]),
            sounding=torch.from_numpy(lay["sounding"]),
            sources=torch.from_numpy(snd["sources"]),
            source_categories=torch.from_numpy(lay["source_categories"]),
            source_objects=torch.from_numpy(lay["source_objects"]),
            masks=torch.from_numpy(vis["masks"]),
            frame_indices=torch.from_numpy(vis["frame_indices"]),
            num_frames=self.num_frames,
            family=lay["family"],
            index=index,
        )

    # ------------------------------------------------------------------ light accessors (used by AVC pair sampling)
    def get_frame(self, index: int, frame: int) -> torch.Tensor:
        """The ``(3, H, W)`` float32 frame ``frame`` of scene ``index`` (rendered alone)."""
        return torch.from_numpy(self.render_frames(index, [frame])["frames"][0])

    def get_audio(self, index: int) -> torch.Tensor:
        """The ``(N,)`` float32 mixture of scene ``index``."""
        return torch.from_numpy(self.render_audio(index)["audio"])

    def clip_frame_indices(self, index: int) -> np.ndarray:
        """Video frame numbers of clip ``index``: ``0 … num_frames - 1`` for every scene."""
        return np.arange(self.num_frames)

    def clip_name(self, index: int) -> str:
        """How errors name clip ``index``."""
        return f"SynthOrchestra scene {index} (seed {self.seed})"

    def clip_fps(self, index: int) -> float:
        """Frame rate of clip ``index`` (the world's ``fps``)."""
        return self.fps

    def clip_samples(self, index: int) -> int:
        """Number of audio samples of clip ``index`` (the same for every scene)."""
        return self.num_samples

    def clip_label(self, index: int) -> int:
        """A single category for the clip: the first sounding visible object, else the first source, else -1."""
        lay = self.layout(index)
        snd = lay["categories"][lay["sounding"]]
        if snd.size:
            return int(snd[0])
        return int(lay["source_categories"][0]) if lay["source_categories"].size else -1


def _midi_to_hz(m: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def synthesize_sources(
    src_cats: np.ndarray,
    tab: dict[str, np.ndarray],
    sample_rate: int,
    n: int,
    rng: np.random.Generator,
    noise_level: float = 0.0,
    frame_artifact: float = 0.0,
    fps: float = 25.0,
    n_harmonics: int = 16,
) -> dict:
    """Additive synthesis of each source as a sequence of notes, vectorised over sources, partials and samples.

    Each source plays notes of 0.25–0.7 s (the first may start before the clip), with the pitch drawn from its
    category's range, an envelope by playing style (bowed / blown: soft attack, sustain, vibrato; plucked / struck:
    sharp attack, decay faster for high partials) and a harmonic profile ``h^-rolloff`` shaped by a formant bump, with
    per-scene jitter. Returns ``audio (N,)`` and ``sources (n_src, N)`` float32 with ``audio = sources.sum(0) + noise +
    artifact``.
    """
    n_src = int(src_cats.size)
    sr = float(sample_rate)
    t = np.arange(n, dtype=np.float64) / sr
    sources = np.zeros((n_src, n), dtype=np.float32)
    if n_src:
        env_kind = tab["envelope"][src_cats]  # (S,)
        sustained = (env_kind == ENVELOPES.index("bowed")) | (env_kind == ENVELOPES.index("blown"))
        # notes: durations, onsets (first onset before 0), pitches, velocities
        max_notes = int(np.ceil(n / sr / 0.25)) + 2
        dur = rng.uniform(0.25, 0.7, size=(n_src, max_notes))
        onsets = np.cumsum(dur, 1) - dur - rng.uniform(0, 1, size=(n_src, 1)) * dur[:, :1]
        lo, hi = tab["midi"][src_cats, 0], tab["midi"][src_cats, 1]
        midi = lo[:, None] + rng.uniform(size=(n_src, max_notes)) * (hi - lo)[:, None]
        velocity = rng.uniform(0.6, 1.0, size=(n_src, max_notes))
        # note index per sample: note m covers the samples from its onset to the next onset (the first onset is <= 0)
        onset_samples = np.clip(np.ceil(onsets * sr), 0, n).astype(np.int64)
        counts = np.diff(np.concatenate([onset_samples, np.full((n_src, 1), n)], 1), axis=1)
        counts[:, 0] += onset_samples[:, 0]  # samples before a (clipped) first onset belong to the first note
        per_note = np.stack([onsets, dur, _midi_to_hz(midi), velocity], -1).reshape(n_src * max_notes, 4)
        per_sample = np.repeat(per_note, counts.ravel(), axis=0).reshape(n_src, n, 4)  # each note's values, (S, N, 4)
        tau = (t[None, :] - per_sample[..., 0]).astype(np.float32)  # time since the note's onset
        length = per_sample[..., 1].astype(np.float32)
        f_inst = per_sample[..., 2]  # float64: the phase is its running sum
        vib_rate = rng.uniform(4.5, 6.5, size=(n_src, 1))
        vib_depth = np.where(sustained, rng.uniform(0.002, 0.008, size=n_src), 0.0)[:, None]
        if sustained.any():  # vibrato on bowed / blown notes
            vibrato = np.sin((2 * np.pi * vib_rate * t[None, :]).astype(np.float32))
            f_inst = f_inst * (1.0 + vib_depth.astype(np.float32) * vibrato)
        drop = tab["pitch_drop"][src_cats][:, None].astype(np.float32)
        if drop.any():  # drums start sharp and fall to their pitch
            f_inst = f_inst * (1.0 + drop * np.exp(-tau / np.float32(0.04)))
        phase = 2 * np.pi * np.cumsum(f_inst, 1) / sr + rng.uniform(0, 2 * np.pi, size=(n_src, 1))  # (S, N)
        # partial ratios are multiples of 0.01, so reducing the phase modulo 2π·100 keeps sin(ratio · phase) exact
        # while the product fits float32 (error ~1e-3 rad)
        phase32 = np.mod(phase, 200 * np.pi).astype(np.float32)

        # partial ratios and amplitudes (S, H)
        h = np.arange(1, n_harmonics + 1, dtype=np.float64)
        ratios = np.where(tab["odd_only"][src_cats][:, None], 2 * h - 1, h)  # (S, H)
        inharm = tab["n_partials"][src_cats] > 0
        n_max_p = tab["partials"].shape[1]
        ratios[inharm, :n_max_p] = tab["partials"][src_cats[inharm]]
        ratios[inharm, n_max_p:] = 0.0
        rolloff = tab["rolloff"][src_cats][:, None] * rng.uniform(0.7, 1.3, size=(n_src, 1))
        amp = np.maximum(ratios, 1.0) ** -rolloff * np.exp(0.25 * rng.standard_normal((n_src, n_harmonics)))
        formant = tab["formant"][src_cats][:, None] * 2.0 ** rng.uniform(-0.5, 0.5, size=(n_src, 1))
        typical = _midi_to_hz(midi.mean(1))[:, None] * np.maximum(ratios, 1e-3)
        amp *= 1.0 + 1.5 * np.exp(-0.5 * np.log2(typical / formant) ** 2)  # a formant bump around `formant` Hz
        keep = (ratios > 0) & (_midi_to_hz(lo)[:, None] * ratios < 0.45 * sr)  # drop padding / always-aliasing partials
        amp = np.where(keep, amp, 0.0)
        used = keep.any(0)  # partial slots that any source uses
        ratios, amp = ratios[:, used], amp[:, used]

        # envelopes (S, N); plucked / struck partials decay at rate d·(1 + 0.35 h): a geometric factor across h
        attack_time = np.select([env_kind == 0, env_kind == 1, env_kind == 2], [0.08, 0.003, 0.04], 0.0015)[:, None]
        attack = 1.0 - np.exp(-tau / attack_time.astype(np.float32))
        release = np.clip((length - tau) / np.float32(0.03), 0.0, 1.0)
        decay_rate = np.where(sustained, 0.0, rng.uniform(2.0, 6.0, size=n_src))[:, None].astype(np.float32)  # 1/s
        env = attack * release * per_sample[..., 3].astype(np.float32)
        base_decay = np.exp(-decay_rate * tau)  # (S, N)
        step = np.exp(np.float32(-0.35) * decay_rate * tau)
        # tone = Σ_h amp_h · sin(ratio_h · phase) · step^h, evaluated by Horner's rule over the partials
        ratios32, amp32 = ratios.astype(np.float32), amp.astype(np.float32)
        tone = np.zeros((n_src, n), dtype=np.float32)
        partial = np.empty((n_src, n), dtype=np.float32)
        nyquist_guard = np.float32(0.45 * sr)
        f_inst32 = f_inst.astype(np.float32)
        f_top = float(f_inst32.max())
        for k in range(ratios.shape[1] - 1, -1, -1):  # partials above 0.45·sr at the current pitch are muted
            np.multiply(ratios32[:, k, None], phase32, out=partial)
            np.sin(partial, out=partial)
            if ratios32[:, k].max() * f_top >= nyquist_guard:  # only partials that can reach the guard need it
                partial *= ratios32[:, k, None] * f_inst32 < nyquist_guard
            tone *= step
            tone += amp32[:, k, None] * partial
        tone *= base_decay * env

        # band-limited noise (breath / bow / drum skin), shaped in the frequency domain
        freqs = np.fft.rfftfreq(n, 1.0 / sr)
        band = tab["noise_band"][src_cats][:, None] * 2.0 ** rng.uniform(-1.0, 1.0, size=(n_src, 1))
        shape = np.exp(-0.5 * (np.log2(np.maximum(freqs[None], 1.0) / band) / 0.8) ** 2)
        spectrum = rng.standard_normal((n_src, 2 * freqs.size), dtype=np.float32).view(np.complex64)
        spectrum *= shape.astype(np.float32)
        shaped = np.fft.irfft(spectrum, n=n, axis=1).astype(np.float32)  # Gaussian noise with that spectral shape
        shaped /= np.sqrt(np.mean(shaped**2, axis=1, keepdims=True)) + 1e-8
        noise_env = np.where(sustained[:, None], env, env * np.exp(-tau / np.float32(0.08)))
        tone_rms = np.sqrt(np.mean(tone**2, axis=1, keepdims=True)) + 1e-8
        # noise level: the category's, at least 0.01, times a per-scene factor in [1/3, 3] (log-uniform)
        level = np.maximum(tab["noise"][src_cats], 0.01)[:, None] * 3.0 ** rng.uniform(-1.0, 1.0, size=(n_src, 1))
        src = tone + level.astype(np.float32) * tone_rms * shaped * noise_env

        # loudness: each source to unit RMS, then a random gain of -6 … 0 dB
        src /= np.sqrt(np.mean(src**2, axis=1, keepdims=True)) + 1e-8
        src *= 10.0 ** (rng.uniform(-6.0, 0.0, size=(n_src, 1)) / 20.0)
        sources = src.astype(np.float32)

    mix = sources.sum(0)
    peak = float(np.abs(mix).max()) if n_src else 0.0
    gain = rng.uniform(0.3, 0.8) / peak if peak > 0 else 1.0
    sources = (sources * gain).astype(np.float32)
    audio = sources.sum(0)
    if noise_level > 0:
        white = rng.standard_normal(n)
        spec = np.fft.rfft(white) / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0))  # pink: power ~ 1/f
        pink = np.fft.irfft(spec, n=n)
        audio = audio + (noise_level * pink / (pink.std() + 1e-12)).astype(np.float32)
    if frame_artifact > 0:
        audio = audio + frame_artifact_signal(n, sample_rate, fps, frame_artifact)
    return {"audio": audio.astype(np.float32), "sources": sources}


def frame_artifact_signal(n: int, sample_rate: int, fps: float, amplitude: float) -> np.ndarray:
    """``(n,)`` a short broadband click (+a, -a, +a/2) at every video-frame boundary ``round(k * sr / fps)``."""
    out = np.zeros(n, dtype=np.float32)
    starts = np.round(np.arange(0, n / sample_rate * fps) * sample_rate / fps).astype(np.int64)
    for offset, value in enumerate((1.0, -1.0, 0.5)):
        pos = starts + offset
        out[pos[pos < n]] += amplitude * value
    return out
