"""A miniature IEMOCAP and CMU-MOSEI in their exact raw formats, built from real faces and real speech.

No real corpus may ship with the project, so the demo and the end-to-end tests run on these. Every
utterance gets a hidden class (one of the six IEMOCAP classes), which decides three cues independently,
so that each modality alone can be learnt above chance:

* visual: the face on screen while the utterance is spoken, drawn from a per-class pool of real LFW
  faces (scikit-image) with a class-specific colour tint and lighting, animated with a pan/zoom jitter;
* audio: the voice, one speaker of pyannote's two-speaker sample dialogue resampled by a class-specific
  speed/pitch factor and coloured by a class-specific resonance (a formant-like peak in the timbre);
* text: class-specific phrases mixed with neutral filler taken from the same sample's transcript.

The trees also hold the traps of the real formats (codes outside the six classes, XX ids, junk files,
a latin-1 byte, a missing sentence wav, CSD rows out of clip order or matching nothing, negative starts,
segments past the media end, ...). ``demo_truth.json`` records every hidden class and every expected
drop with its reason. Which ids exist and where the traps sit is fixed; the seed decides the classes,
timings, faces, voices, words and backgrounds.

Modules, by section: ``cues`` (hidden classes, seeded streams), ``faces`` (face sprites), ``video``
(animated tracks and video files), ``voices`` (class voices and words), ``assets`` (all of them loaded),
``iemocap`` and ``mosei`` (the two raw trees), ``build`` (both trees and the truth file).
"""

from data_reorg.demo.assets import Assets, load_assets
from data_reorg.demo.build import DEMO_VERSION, DemoCorpora, build_demo_corpora
from data_reorg.demo.cues import CLASSES
from data_reorg.demo.iemocap import build_iemocap, plan_dialog
from data_reorg.demo.mosei import CSD_NAME, MOSEI_VIDEOS, build_mosei, plan_video
from data_reorg.demo.voices import CLASS_PHRASES, VOICES

__all__ = [
    "CLASSES",
    "CLASS_PHRASES",
    "CSD_NAME",
    "DEMO_VERSION",
    "MOSEI_VIDEOS",
    "VOICES",
    "Assets",
    "DemoCorpora",
    "build_demo_corpora",
    "build_iemocap",
    "build_mosei",
    "load_assets",
    "plan_dialog",
    "plan_video",
]
