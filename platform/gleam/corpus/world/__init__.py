"""A procedural synthetic city rendered consistently in every modality, written as a raw corpus.

The map is a pure function of (seed, position), so every place is rendered on its own, in any process
and order, to the same bytes. Conventions (docs/world.md): x east, y north, metres, origin at the world
centre; crops are north-up; azimuths are degrees clockwise from north.

    config.py       WorldConfig, what `gleam world` reads
    noise.py        hashes and value noise: the world's only randomness below a place
    styles.py       district styles: street, lot and building parameters, palettes
    layers.py       surface labels, Fields (the surface at points), Layers (the map crop of a place)
    buildings.py    lots, footprints, heights and colours of buildings
    dressing.py     trees and texture on a crop
    city.py         CityMap: districts, streets, blocks, rivers; `crop` around a place
    sites.py        where the places are (on roads, spread) and their lat/lon
    shading.py      light, shadows, irradiance, facade detail
    camera.py       each capture's colour response and noise; JPEG/PNG encoding
    render_maps.py  satellite orthophoto and street map
    render_drone.py oblique drone view
    render_street.py panorama and ground photo
    streams.py      the random stream keys of every tile, view and photo
    shots.py        the query photos: camera offsets, sets and their odd photos out
    gallery.py      the satellite tiles: one per place, or a raster-style grid
    views.py        the views of a place and of one photo
    tables.py       manifest.csv and poses.csv rows (first and located layouts)
    fanout.py       render places and write their images, on Ray when it runs
    layout.py       the corpus's file names and paths
    generate.py     generate_world: the corpus writer and its completion marker
    baseline.py     colour-histogram baseline scored by the platform's metrics
"""

from gleam.corpus.world.baseline import BaselineResult, histogram_baseline
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.generate import (
    RENDERER_VERSION,
    OutputOccupiedError,
    WorldExistsError,
    WorldSummary,
    fingerprint,
    generate_world,
    plan_world,
)
from gleam.corpus.world.sites import Site, build_city, min_spacing, sample_sites, to_latlon, world_side
from gleam.corpus.world.views import render_site, site_layers

__all__ = [
    "RENDERER_VERSION",
    "BaselineResult",
    "CityMap",
    "OutputOccupiedError",
    "Site",
    "WorldConfig",
    "WorldExistsError",
    "WorldSummary",
    "build_city",
    "fingerprint",
    "generate_world",
    "histogram_baseline",
    "min_spacing",
    "plan_world",
    "render_site",
    "sample_sites",
    "site_layers",
    "to_latlon",
    "world_side",
]
