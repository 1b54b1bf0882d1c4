"""Sample data: procedural pCLE-like phantoms, phantom sequences and local natural images.

Nothing here downloads anything.
"""

from napari_pclesr.data.natural import NATURAL_IMAGES, natural_image
from napari_pclesr.data.patches import Normalisation, PairedSequences
from napari_pclesr.data.phantoms import PhantomSequence, image_sequence, phantom, phantom_sequence
from napari_pclesr.data.recordings import LRRecordings
from napari_pclesr.data.splits import SequenceSplit, split_sequences

__all__ = [
    "NATURAL_IMAGES",
    "LRRecordings",
    "Normalisation",
    "PairedSequences",
    "PhantomSequence",
    "SequenceSplit",
    "image_sequence",
    "natural_image",
    "phantom",
    "phantom_sequence",
    "split_sequences",
]
