"""``python -m napari_pclesr.cli`` runs the ``pclesr`` command line."""

import sys

from napari_pclesr.cli import main

sys.exit(main())
