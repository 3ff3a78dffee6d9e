"""The files of a world corpus, named once: the writer, the baseline and the `world` source all use these.

<output>/<modality>/<location_id>.jpg   (streetmap: .png), satellite tiles included
<output>/manifest.csv                   the generic manifest (relative URIs)
<output>/poses.csv                      the random pose of each view
<output>/world.json                     written last: marks the world complete
"""

from __future__ import annotations

from gleam import storage
from gleam.corpus.schema import Modality

MANIFEST_FILE = "manifest.csv"
POSES_FILE = "poses.csv"
MARKER_FILE = "world.json"
MANIFEST_COLUMNS = ["query_uri", "modality", "tile_uri", "location_id", "lat", "lon", "split"]
POSE_COLUMNS = ["location_id", "x_m", "y_m", "drone_azimuth_deg", "drone_pitch_deg", "ground_heading_deg"]
EXTENSIONS = {Modality.STREETMAP: "png"}  # maps are flat colours: lossless; photos are JPEG


def extension(modality: Modality) -> str:
    return EXTENSIONS.get(modality, "jpg")


def relative_uri(modality: Modality, site_id: str) -> str:
    return f"{modality.value}/{site_id}.{extension(modality)}"


def owned_names() -> list[str]:
    """Every entry the world writes at the top of its output (what a rewrite deletes)."""
    return [m.value for m in Modality] + [MANIFEST_FILE, POSES_FILE, MARKER_FILE]


def owned_paths(root: str) -> list[str]:
    """What a rewrite deletes before rendering again; the marker is deleted first, on its own."""
    return [storage.join(root, name) for name in owned_names() if name != MARKER_FILE]
