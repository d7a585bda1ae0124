"""Data for avlib: the SynthOrchestra world, the on-disk clip format, and AVC pair sampling.

- :class:`SynthOrchestra` / :class:`Scene` (``synthetic.py``): procedural instruments with full ground truth.
- :class:`AVCPairs` (``pairs.py``): positives and negatives for audio-visual correspondence, with explicit negative
  offset mode (``naive`` or ``frame_aligned``) and L3's misalignment augmentation.
- :class:`ClipDataset` / :class:`SynthClips` / :func:`write_clips` (``clips.py``): the on-disk clip format (manifest +
  WAV + PNG), its reader, and the in-memory equivalent over a SynthOrchestra world.
- :class:`Ontology` (``ontology.py``): the category tree behind graded retrieval relevance.
- :func:`preflight` (``preflight.py``): every file of a clip directory decoded once before training, all bad files
  named in one error; ``safety.py``: contained manifest paths, checksums, safe archive extraction.
- ``views.py``: cached in-memory worlds and batched scene / clip tensors shaped for training and evaluation.
"""

from avlib.data.clips import ClipDataset, ClipFormatError, SynthClips, read_manifest, scene_item, write_clips
from avlib.data.ontology import Ontology
from avlib.data.pairs import AVCPairs, BalancedBatchSampler, collate
from avlib.data.preflight import PreflightError, PreflightReport, preflight
from avlib.data.safety import UnsafePathError
from avlib.data.synthetic import FAMILIES, Category, Scene, SynthOrchestra, boxes_to_mask

__all__ = [
    "FAMILIES",
    "AVCPairs",
    "BalancedBatchSampler",
    "Category",
    "ClipDataset",
    "ClipFormatError",
    "Ontology",
    "PreflightError",
    "PreflightReport",
    "Scene",
    "SynthClips",
    "SynthOrchestra",
    "UnsafePathError",
    "boxes_to_mask",
    "collate",
    "preflight",
    "read_manifest",
    "scene_item",
    "write_clips",
]
