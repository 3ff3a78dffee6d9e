"""The query photos of a world: where each camera stands, which set lists it and what it really shows.

A place has `set_size` photos per query modality. Each camera stands at a random offset from the place
it photographs, uniform over the open ground (no building, no water) of a disc of `query_offset_m`; with
no open ground among 64 draws it stands on the place itself, which is on a road. The panorama and the
ground photo of one photo number are one street-level capture: same camera, same light. In a share
`set_outliers` of the (place, modality) sets one photo shows another place (rendered there, from its own
offset) while it is listed in this set, with this set's tile: the odd photo out a user's set can hold.
The drone's camera position is the ground point its view is centred on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gleam.corpus.schema import Modality
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.layers import BUILDING, WATER
from gleam.corpus.world.sites import Site
from gleam.corpus.world.streams import MODALITY_CODES, OFFSET, OUTLIERS, Key, generator, view_key

CLOSED_GROUND = (BUILDING, WATER)  # where no camera stands
OFFSET_DRAWS = 64
STREET_CAPTURE = {Modality.PANORAMA, Modality.GROUND}
STREET_GROUP = MODALITY_CODES[Modality.PANORAMA]  # one camera for both views of a capture


@dataclass(frozen=True)
class Shot:
    """One query photo: listed in `place`'s set of `modality`, taken at (x, y) near `shown`."""

    seed: int
    place: Site
    modality: Modality
    slot: int  # photo number in its set, from 0
    name: str  # file stem: the place id, with the photo number in sets
    set_id: str | None  # one per (place, modality) when set_size > 1
    x: float  # camera, metres east of the world centre
    y: float  # metres north
    shown: Site  # the place it shows: `place`, except for an outlier

    @property
    def outlier(self) -> bool:
        return self.shown.index != self.place.index

    def key(self, stream: int) -> Key:
        """The random stream of this photo's `stream` (its modality's code, or the capture's)."""
        return view_key(self.seed, self.place.index, stream, self.slot)


def photo_name(config: WorldConfig, site: Site, slot: int) -> str:
    return site.location_id if config.set_size == 1 else f"{site.location_id}_{slot + 1}"


def set_id(config: WorldConfig, site: Site, modality: Modality) -> str | None:
    return None if config.set_size == 1 else f"{site.location_id}-{modality.value}"


def camera_offset(city: CityMap, x: float, y: float, radius: float, key: Key) -> tuple[float, float]:
    """(east, north) metres from (x, y) to a camera on open ground, uniform over the disc's open part."""
    if radius <= 0:
        return 0.0, 0.0
    rng = generator(key)
    r = radius * np.sqrt(rng.random(OFFSET_DRAWS))
    theta = rng.uniform(0, 2 * math.pi, OFFSET_DRAWS)
    east, north = r * np.sin(theta), r * np.cos(theta)
    open_ground = ~np.isin(city.labels(x + east, y + north), CLOSED_GROUND)
    if not open_ground.any():
        return 0.0, 0.0
    first = int(np.argmax(open_ground))
    return float(east[first]), float(north[first])


def outliers(config: WorldConfig, places: list[Site]) -> dict[tuple[int, Modality], tuple[int, Site]]:
    """(place index, modality) -> (photo number replaced, the other place it shows), for the chosen sets.

    Exactly round(set_outliers * sets) sets are chosen, so the share is what the config says."""
    sets = [(p, m) for p in places for m in config.modalities]
    count = round(config.set_outliers * len(sets))
    if count == 0 or len(places) < 2:
        return {}
    chosen = generator((config.seed, OUTLIERS)).choice(len(sets), count, replace=False)
    out = {}
    for i in sorted(int(c) for c in chosen):
        place, modality = sets[i]
        rng = generator((config.seed, place.index, OUTLIERS, MODALITY_CODES[modality]))
        slot = int(rng.integers(config.set_size))
        other = int(rng.integers(len(places) - 1))
        out[(place.index, modality)] = (slot, places[other if other < place.index else other + 1])
    return out


def plan_shots(config: WorldConfig, city: CityMap, sites: list[Site]) -> list[Shot]:
    """Every query photo of the world, place by place, modality by modality, photo by photo."""
    places = [s for s in sites if s.queries]
    odd = outliers(config, places)
    shots = []
    for place in places:
        for modality in config.modalities:
            code = MODALITY_CODES[modality]
            for slot in range(config.set_size):
                shown, group = place, (STREET_GROUP if modality in STREET_CAPTURE else code)
                replaced = odd.get((place.index, modality))
                if replaced is not None and replaced[0] == slot:
                    shown, group = replaced[1], 10 + code  # the odd photo's own camera
                key = (config.seed, place.index, OFFSET, group, slot)
                east, north = camera_offset(city, shown.x, shown.y, config.query_offset_m, key)
                shots.append(
                    Shot(
                        seed=config.seed,
                        place=place,
                        modality=modality,
                        slot=slot,
                        name=photo_name(config, place, slot),
                        set_id=set_id(config, place, modality),
                        x=shown.x + east,
                        y=shown.y + north,
                        shown=shown,
                    )
                )
    return shots
