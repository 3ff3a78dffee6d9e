"""District styles of the synthetic city: street grids, block and lot sizes, building shapes, palettes.

One row per style (downtown, residential, industrial, green); the map draws each district's style and
then every parameter of its streets and buildings from these ranges.
"""

from __future__ import annotations

import numpy as np

from gleam.corpus.world.layers import BARE, GRASS, PAVED

# District styles and their parameters, one row per style: downtown, residential, industrial, green.
DOWNTOWN, RESIDENTIAL, INDUSTRIAL, GREEN = range(4)
STYLE_WEIGHTS = np.array([0.25, 0.4, 0.15, 0.2])
PITCH = np.array([[60, 100], [55, 90], [80, 140], [70, 120]], dtype=np.float64)  # block spacing (m)
MINOR_WIDTH = np.array([[8, 12], [6, 9], [8, 12], [5, 8]], dtype=np.float64)
MAJOR_P = np.array([0.25, 0.15, 0.2, 0.1])
SIDEWALK_W = np.array([3.0, 2.0, 1.5, 1.5])
# Block types: buildings, park, water, parking, plaza (cumulative thresholds per style).
BLOCK_P = np.cumsum(
    [[0.78, 0.08, 0.02, 0.06, 0.06], [0.84, 0.1, 0.03, 0.02, 0.01], [0.75, 0.03, 0.02, 0.15, 0.05],
     [0.45, 0.4, 0.1, 0.03, 0.02]],
    axis=1,
)  # fmt: skip
LOT_W = np.array([[22, 40], [12, 20], [35, 70], [15, 25]], dtype=np.float64)
SETBACK = np.array([[0, 1.5], [2, 5], [3, 8], [3, 7]], dtype=np.float64)
HEIGHT = np.array([[12, 60], [5, 10], [6, 14], [4, 8]], dtype=np.float64)
GABLE_P = np.array([0.0, 0.75, 0.1, 0.7])
L_SHAPE_P = np.array([0.3, 0.35, 0.2, 0.3])
COURTYARD_P = np.array([0.35, 0.0, 0.0, 0.0])
OPEN_LOT = np.array([PAVED, GRASS, BARE, GRASS], dtype=np.uint8)
STREET_TREE_P = np.array([0.25, 0.45, 0.05, 0.5])
GARDEN_TREE_P = np.array([0.05, 0.3, 0.03, 0.35])

ROOFS = np.array(
    [[176, 86, 62], [128, 52, 44], [112, 86, 70], [78, 84, 96], [66, 66, 70], [128, 128, 126],
     [186, 184, 178], [222, 222, 214], [196, 176, 140], [96, 140, 120], [92, 118, 150], [44, 44, 48],
     [150, 96, 60], [210, 190, 150]],
    dtype=np.float32,
) / 255  # fmt: skip
STYLE_ROOFS = np.array(
    [[4, 5, 6, 7, 11, 3, 8, 9], [0, 1, 2, 3, 4, 0, 12, 5], [5, 6, 7, 10, 11, 12, 4, 6],
     [0, 1, 2, 3, 9, 4, 0, 12]]
)  # fmt: skip
PLASTERS = np.array(
    [[230, 226, 214], [228, 210, 170], [205, 160, 95], [214, 150, 130], [190, 190, 188], [150, 72, 56],
     [90, 120, 150], [100, 76, 60], [180, 200, 170]],
    dtype=np.float32,
) / 255  # fmt: skip
GROUND_RGB = np.array(
    [[136, 118, 92], [92, 128, 64], [84, 84, 88], [72, 72, 76], [160, 156, 150], [128, 128, 128],
     [54, 86, 46], [46, 78, 96], [110, 110, 112], [176, 168, 152]],
    dtype=np.float32,
) / 255  # fmt: skip

# Texture amplitude per label at scales 0.8 m, 5 m and 28 m.
TEXTURE = np.array(
    [[0.10, 0.10, 0.10], [0.08, 0.10, 0.18], [0.04, 0.05, 0.08], [0.04, 0.05, 0.08], [0.05, 0.05, 0.04],
     [0.05, 0.05, 0.04], [0.30, 0.10, 0.06], [0.03, 0.04, 0.10], [0.04, 0.04, 0.05], [0.06, 0.06, 0.05]],
    dtype=np.float32,
)  # fmt: skip
