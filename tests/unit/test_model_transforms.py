"""Per-modality transforms: eval sizes and normalisation, and augmentation that keeps a panorama and its
satellite tile geometrically consistent (checked with markers due north and due east)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gleam.corpus.schema import Modality
from gleam.model.spec import EncoderSpec
from gleam.model.transforms import (
    AugmentConfig,
    EvalTransform,
    Geometry,
    TrainTransform,
    decode,
    eval_batch,
    paired_geometric_augment,
    photometric,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)
NO_NOISE = AugmentConfig(colour_jitter_p=0, blur_sharpen_p=0, dropout_p=0)


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


# --- eval ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [EncoderSpec.tiny(), EncoderSpec()], ids=["tiny", "default"])
def test_eval_transform_gives_each_modality_its_size(spec: EncoderSpec) -> None:
    photo = encode(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8), "JPEG")
    for modality in Modality:
        width, height = spec.size(modality)
        out = eval_batch([photo, photo], modality, spec)
        assert out.shape == (2, 3, height, width) and out.dtype == torch.float32
        assert EvalTransform(spec, modality.value)(photo).shape == (3, height, width)
    assert spec.size(Modality.PANORAMA)[0] == 2 * spec.size(Modality.PANORAMA)[1]


def test_eval_normalises_with_the_spec_mean_and_std() -> None:
    spec = EncoderSpec.tiny(mean=(0.1, 0.2, 0.3), std=(0.2, 0.25, 0.5), channels_last=True)
    colour = np.array([10, 128, 250], dtype=np.uint8)
    image = np.broadcast_to(colour, (40, 40, 3)).copy()
    out = EvalTransform(spec, "drone").batch([encode(image), image])
    expected = (colour / 255.0 - np.array([0.1, 0.2, 0.3])) / np.array([0.2, 0.25, 0.5])
    assert out.is_contiguous(memory_format=torch.channels_last)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(out[b, c], torch.full((64, 64), float(expected[c])))


def test_decode_handles_grey_transparent_and_big_jpegs() -> None:
    spec = EncoderSpec.tiny(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    grey = encode(np.full((20, 30), 51, dtype=np.uint8))
    clear = encode(np.zeros((20, 30, 4), dtype=np.uint8))  # fully transparent -> white background
    big = encode(np.full((1200, 2400, 3), 200, dtype=np.uint8), "JPEG")  # decoded at reduced scale
    out = EvalTransform(spec, Modality.PANORAMA).batch([grey, clear, big])
    torch.testing.assert_close(out[0], torch.full((3, 64, 128), 0.2))
    torch.testing.assert_close(out[1], torch.ones(3, 64, 128))
    assert (out[2] - 200 / 255).abs().max() < 0.02


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise (a phone held upright)
    buffer = io.BytesIO()
    Image.new("RGB", (400, 200), (30, 60, 90)).save(buffer, format="JPEG", exif=exif)
    assert decode(buffer.getvalue()).size == (200, 400)
    assert decode(buffer.getvalue(), size=(50, 100)).size == (50, 100)  # decoded at 1/4 scale, turned


# --- geometry --------------------------------------------------------------------------------------------


def marker_pair(tile: int = 64, height: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A north-up tile and a north-centred panorama with a red marker due north, a blue one due east."""
    sat = np.full((tile, tile, 3), 128, dtype=np.uint8)
    c = tile // 2
    sat[4:8, c - 2 : c + 2] = RED  # north of the centre: top
    sat[c - 2 : c + 2, tile - 8 : tile - 4] = BLUE  # east of the centre: right
    width = 2 * height
    pano = np.full((height, width, 3), 128, dtype=np.uint8)
    rows = slice(height // 2 - 4, height // 2 + 4)
    pano[rows, column_of(0.0, width) - 2 : column_of(0.0, width) + 2] = RED
    pano[rows, column_of(90.0, width) - 2 : column_of(90.0, width) + 2] = BLUE
    return pano, sat


def column_of(azimuth: float, width: int) -> int:
    """First column at or right of `azimuth` under the convention (c + 0.5) / W * 360 - 180."""
    return round((azimuth + 180) / 360 * width)


def mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - colour) < 60, axis=-1)


def circular_mean(degrees: np.ndarray) -> float:
    rad = np.radians(degrees)
    return math.degrees(math.atan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360


def tile_azimuth(sat: np.ndarray, colour: tuple[int, int, int]) -> float:
    """Compass bearing of a marker from the tile centre: 0 = up (north), 90 = right (east)."""
    ys, xs = np.nonzero(mask(sat, colour))
    centre = (sat.shape[0] - 1) / 2
    return math.degrees(math.atan2(xs.mean() - centre, centre - ys.mean())) % 360


def panorama_azimuth(pano: np.ndarray, colour: tuple[int, int, int]) -> float:
    _, cols = np.nonzero(mask(pano, colour))
    return circular_mean((cols + 0.5) / pano.shape[1] * 360 - 180)


def angle_gap(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_panorama_convention_matches_the_synthetic_world() -> None:
    from gleam.corpus.world.render_street import panorama_angles  # ours: a skip would hide a move

    azimuth, _ = panorama_angles(128, 64)
    np.testing.assert_allclose(azimuth, (np.arange(128) + 0.5) / 128 * 360 - 180)
    assert azimuth[column_of(90.0, 128)] > 90 > azimuth[column_of(90.0, 128) - 1]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_every_paired_geometry_keeps_the_markers_consistent(flip: bool, turns: int) -> None:
    pano, sat = marker_pair()
    geometry = Geometry(flip, turns)
    pano2, sat2 = geometry.panorama(pano), geometry.satellite(sat)
    assert pano2.shape == pano.shape and sat2.shape == sat.shape
    for colour in (RED, BLUE):
        assert angle_gap(tile_azimuth(sat2, colour), panorama_azimuth(pano2, colour)) < 3


def test_geometry_directions_by_hand() -> None:
    pano, sat = marker_pair()
    east_up = Geometry(quarter_turns=1)  # np.rot90 k=1: counter-clockwise, east comes to the top
    assert tile_azimuth(east_up.satellite(sat), BLUE) == pytest.approx(0, abs=3)
    assert panorama_azimuth(east_up.panorama(pano), BLUE) == pytest.approx(0, abs=3)  # rolled left W/4
    assert panorama_azimuth(east_up.panorama(pano), RED) == pytest.approx(270, abs=3)  # north is now west
    mirrored = Geometry(flip=True)  # east <-> west, north stays north
    assert tile_azimuth(mirrored.satellite(sat), BLUE) == pytest.approx(270, abs=3)
    assert panorama_azimuth(mirrored.panorama(pano), BLUE) == pytest.approx(270, abs=3)
    assert panorama_azimuth(mirrored.panorama(pano), RED) == pytest.approx(0, abs=3)


def test_paired_augment_per_modality() -> None:
    pano, sat = marker_pair()
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        pano2, sat2, geometry = paired_geometric_augment(pano, sat, rng, Modality.PANORAMA)
        seen.add((geometry.flip, geometry.quarter_turns))
        for colour in (RED, BLUE):
            assert angle_gap(tile_azimuth(sat2, colour), panorama_azimuth(pano2, colour)) < 3
        street, sat3, geometry = paired_geometric_augment(sat, sat, rng, "streetmap")
        assert np.array_equal(street, sat3) and np.array_equal(sat3, geometry.satellite(sat))
        drone = np.zeros((64, 64, 3), dtype=np.uint8)
        same, sat4, geometry = paired_geometric_augment(drone, sat, rng, Modality.DRONE)
        assert same is drone and not geometry.flip and np.array_equal(sat4, geometry.satellite(sat))
    assert len(seen) == 8  # every flip x quarter-turn combination occurs
    with pytest.raises(ValueError, match="multiple of 4"):
        Geometry(quarter_turns=1).panorama(np.zeros((8, 30, 3), dtype=np.uint8))


def test_train_pairs_stay_consistent_through_decoding() -> None:
    spec = EncoderSpec.tiny()
    pano, sat = marker_pair()
    transform = TrainTransform(spec, NO_NOISE)
    rng = np.random.default_rng(7)
    for _ in range(12):
        q, s, geometry = transform.pair(encode(pano), encode(sat), Modality.PANORAMA, rng)
        q_np, s_np = q.permute(1, 2, 0).numpy(), s.permute(1, 2, 0).numpy()
        assert np.array_equal(q_np, geometry.panorama(pano)) and np.array_equal(s_np, geometry.satellite(sat))
        for colour in (RED, BLUE):
            assert angle_gap(tile_azimuth(s_np, colour), panorama_azimuth(q_np, colour)) < 3


# --- photometric noise and batches -----------------------------------------------------------------------


def test_train_batches_are_seeded_and_shaped() -> None:
    spec = EncoderSpec.tiny(channels_last=True)
    photo = encode(np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8), "JPEG")
    transform = TrainTransform(spec)
    for modality in Modality.query_modalities():
        q1, s1 = transform.batch([photo] * 3, [photo] * 3, modality, np.random.default_rng(5))
        q2, s2 = transform.batch([photo] * 3, [photo] * 3, modality, np.random.default_rng(5))
        width, height = spec.size(modality)
        assert q1.shape == (3, 3, height, width) and s1.shape == (3, 3, 64, 64)
        assert q1.dtype == torch.float32 and q1.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(q1, q2) and torch.equal(s1, s2)
    q3, _ = transform.batch([photo] * 3, [photo] * 3, "ground", np.random.default_rng(6))
    assert not torch.equal(q3, q1)


def test_photometric_noise_changes_pixels_but_not_its_input() -> None:
    image = np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    before = image.copy()
    everything = AugmentConfig(colour_jitter_p=1, blur_sharpen_p=1, dropout_p=1)
    out = photometric(image, np.random.default_rng(3), everything)
    assert out.shape == (3, 64, 96) and out.dtype == torch.uint8
    assert np.array_equal(image, before) and not np.array_equal(out.permute(1, 2, 0).numpy(), image)
    assert (out == 0).all(dim=0).float().mean() > 0.05  # coarse dropout blacked out boxes
    untouched = photometric(image, np.random.default_rng(3), NO_NOISE)
    assert np.array_equal(untouched.permute(1, 2, 0).numpy(), image)
