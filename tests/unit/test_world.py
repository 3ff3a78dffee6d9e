"""The synthetic world: determinism, corpus layout, completion marker, geometry of the views, difficulty."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gleam import config as gconfig
from gleam import storage
from gleam.corpus import world
from gleam.corpus.schema import Modality
from gleam.corpus.world import generate, render_drone, render_street
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.layers import BUILDING, MAJOR, ROAD, WATER, Layers
from gleam.corpus.world.layout import MANIFEST_FILE, MARKER_FILE, POSES_FILE
from gleam.corpus.world.shading import Light

SMALL = {"tile_size": 64, "query_size": 48}


def small_config(tmp_path: Path, name: str = "w", **overrides: object) -> WorldConfig:
    values = {"output": str(tmp_path / name), "locations": 3, "distractors": 1, "seed": 7, **SMALL}
    values.update(overrides)
    return WorldConfig(**values)


def corpus_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_manifest(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (root / MANIFEST_FILE).open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = world.generate_world(small_config(tmp_path, "a"))
    world.generate_world(small_config(tmp_path, "b"))
    world.generate_world(small_config(tmp_path, "c", seed=8))
    a, b, c = (corpus_files(tmp_path / name) for name in "abc")
    a.pop(MARKER_FILE), b.pop(MARKER_FILE), c.pop(MARKER_FILE)  # holds the creation time
    assert a == b
    assert first.tiles == 4 and len(a) == 4 + 3 * 4 + 2  # tiles, queries, manifest and poses
    images = [k for k in a if k.endswith((".jpg", ".png"))]
    assert all(a[k] != c[k] for k in images if k in c), "another seed must give other images"


def test_location_order_does_not_matter(tmp_path: Path) -> None:
    """Each place has its own random streams: rendering one alone gives the bytes of the whole run."""
    cfg = small_config(tmp_path)
    city = world.CityMap(cfg.seed, world.world_side(cfg))
    sites = world.sample_sites(cfg, city)
    city.keep_clear(np.array([(s.x, s.y) for s in sites]))
    together = [world.render_site(cfg, city, s, cfg.modalities)[0] for s in sites]
    alone, _ = world.render_site(cfg, city, sites[2], cfg.modalities)
    for modality, img in alone.items():
        assert np.array_equal(img, together[2][modality])


def test_layout_manifest_and_sizes(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, locations=4, distractors=2)
    summary = world.generate_world(cfg)
    root = Path(cfg.output)
    columns, rows = read_manifest(root)
    assert columns == ["query_uri", "modality", "tile_uri", "location_id", "lat", "lon", "split"]
    queries = [r for r in rows if r["query_uri"]]
    distractors = [r for r in rows if not r["query_uri"]]
    assert len(queries) == 4 * 4 and len(distractors) == 2
    assert all(r["modality"] == "" for r in distractors)
    assert all(r["split"] == "" for r in rows)
    assert {r["modality"] for r in queries} == {m.value for m in Modality.query_modalities()}
    assert {r["location_id"] for r in rows} == {f"w{i:05d}" for i in range(1, 7)}
    for r in queries:
        assert (
            r["query_uri"]
            == f"{r['modality']}/{r['location_id']}.{'png' if r['modality'] == 'streetmap' else 'jpg'}"
        )
        assert r["tile_uri"] == f"satellite/{r['location_id']}.jpg"
    sizes = {
        "satellite": (64, 64),
        "drone": (48, 48),
        "streetmap": (48, 48),
        "panorama": (96, 48),
        "ground": (48, 48),
    }
    for r in rows:
        for uri, modality in ((r["tile_uri"], "satellite"), (r["query_uri"], r["modality"])):
            if uri:
                with Image.open(root / uri) as img:
                    assert img.size == sizes[modality], uri
                    assert img.format == ("PNG" if modality == "streetmap" else "JPEG")
                    assert img.mode == "RGB"
    assert summary.counts == {"satellite": 6, "drone": 4, "streetmap": 4, "panorama": 4, "ground": 4}
    assert {p.name for p in root.iterdir()} == {*summary.counts, MANIFEST_FILE, POSES_FILE, MARKER_FILE}


def test_subset_of_modalities(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, modalities=["panorama"], distractors=0)
    world.generate_world(cfg)
    _, rows = read_manifest(Path(cfg.output))
    assert [r["modality"] for r in rows] == ["panorama"] * 3
    assert not (Path(cfg.output) / "drone").exists()


def test_lat_lon_are_near_the_origin(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, origin_lat=-33.9, origin_lon=151.2)
    world.generate_world(cfg)
    _, rows = read_manifest(Path(cfg.output))
    half_side = world.world_side(cfg) / 2
    for r in rows:
        lat, lon = float(r["lat"]), float(r["lon"])
        assert abs(lat - cfg.origin_lat) * 111_195 < half_side
        assert abs(lon - cfg.origin_lon) * 111_195 * math.cos(math.radians(cfg.origin_lat)) < half_side
    lat, lon = world.to_latlon(1000.0, 2000.0, 0.0, 10.0)
    assert lat == pytest.approx(2000 / 111_195, rel=1e-3) and lon == pytest.approx(
        10 + 1000 / 111_195, rel=1e-3
    )


def test_sites_are_on_roads_and_spread(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, locations=12, distractors=3)
    city = world.CityMap(cfg.seed, world.world_side(cfg))
    sites = world.sample_sites(cfg, city)
    xy = np.array([(s.x, s.y) for s in sites])
    assert len(sites) == 15 and [s.queries for s in sites] == [True] * 12 + [False] * 3
    assert set(city.labels(xy[:, 0], xy[:, 1]).tolist()) <= {ROAD, MAJOR}
    gaps = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1]) + np.eye(len(xy)) * 1e9
    assert gaps.min() >= world.min_spacing(cfg)


# --- completion marker -------------------------------------------------------------------------------------


def test_world_json_is_last_and_a_rerun_reuses(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    world.generate_world(cfg)
    root = Path(cfg.output)
    marker = root / MARKER_FILE
    others = [p for p in root.rglob("*") if p.is_file() and p != marker]
    assert marker.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in others)
    meta = storage.read_json(str(marker))
    assert meta["seed"] == 7 and meta["renderer_version"] == world.RENDERER_VERSION
    assert meta["counts"]["satellite"] == 4 and meta["config"]["locations"] == 3
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again = world.generate_world(cfg.model_copy(update={"overwrite": True}))  # same config: still reused
    assert again.reused and again.tiles == 4
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_other_config_needs_overwrite(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    world.generate_world(cfg)
    other = cfg.model_copy(update={"seed": 8})
    with pytest.raises(world.WorldExistsError, match="overwrite"):
        world.generate_world(other)
    summary = world.generate_world(other.model_copy(update={"overwrite": True}))
    assert not summary.reused
    assert storage.read_json(str(Path(cfg.output) / MARKER_FILE))["seed"] == 8


def test_a_crash_leaves_no_marker_and_a_rerun_rewrites_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(tmp_path)
    root = Path(cfg.output)
    (root / "satellite").mkdir(parents=True)
    (root / "satellite" / "w09999.jpg").write_bytes(b"stale")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(generate, "manifest_rows", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        world.generate_world(cfg)
    assert not (root / MARKER_FILE).exists()
    monkeypatch.undo()
    summary = world.generate_world(cfg)
    assert not summary.reused and (root / MARKER_FILE).exists()
    assert not (root / "satellite" / "w09999.jpg").exists()
    assert len(list((root / "satellite").iterdir())) == 4


def test_config_validation() -> None:
    with pytest.raises(gconfig.ConfigError, match="modalities"):
        gconfig.parse_config(WorldConfig, {"output": "x", "modalities": ["satellite"]})
    with pytest.raises(gconfig.ConfigError, match="tile_metres"):
        gconfig.parse_config(WorldConfig, {"output": "x", "tile_metres": 1})


# --- geometry ----------------------------------------------------------------------------------------------


def flat_layers(n: int = 128, res: float = 1.0) -> Layers:
    """An empty grey plain centred on (0, 0)."""
    zeros = np.zeros((n, n), dtype=np.uint8)
    grey = np.full((n, n, 3), 0.4, dtype=np.float32)
    half = n * res / 2
    return Layers(-half, half, res, zeros, zeros.copy(), np.zeros((n, n), np.float32), grey, grey.copy(),
                     np.zeros((n, n), np.float32))  # fmt: skip


def add_block(layers: Layers, x0: float, x1: float, y0: float, y1: float, height: float) -> None:
    """A pure red building over [x0, x1] x [y0, y1] (metres)."""
    xs = layers.x0 + (np.arange(layers.size) + 0.5) * layers.res
    ys = layers.y0 - (np.arange(layers.size) + 0.5) * layers.res
    mask = ((ys[:, None] >= y0) & (ys[:, None] <= y1)) & ((xs[None, :] >= x0) & (xs[None, :] <= x1))
    layers.height[mask] = layers.solid[mask] = height
    layers.label[mask] = BUILDING
    layers.top[mask] = layers.ground_top[mask] = layers.wall[mask] = (1.0, 0.0, 0.0)


OVERCAST_BLUE = Light(0.0, 45.0, (0, 0, 0), (1, 1, 1), (0, 0, 1), (0, 0, 1), (0, 0, 1), 1e9, 0.0)


def is_red(rgb: np.ndarray) -> bool:
    return bool(rgb[0] > 0.5 and rgb[2] < 0.2)


def is_sky(rgb: np.ndarray) -> bool:
    return bool(rgb[2] > 0.8 and rgb[0] < 0.2)


def test_panorama_is_north_aligned_north_at_the_centre() -> None:
    """A tall building due north fills the centre column above the horizon; east, south, west are open."""
    layers = flat_layers()
    add_block(layers, -6, 6, 15, 30, 40.0)
    size = 64
    img = render_street.render_panorama(layers, 0.0, 0.0, size, OVERCAST_BLUE, sky_seed=0)
    azimuth, elevation = render_street.panorama_angles(2 * size, size)
    row = int(np.argmin(np.abs(elevation - 35.0)))  # 35 degrees up: the wall at 15 m reaches 63 degrees
    north = int(np.argmin(np.abs(azimuth - 0.0)))
    assert north in (size - 1, size)  # the centre of the panorama
    assert is_red(img[row, north])
    for bearing in (90.0, 180.0 - 1e-6, -90.0):  # east at 3/4 width, south at the edges, west at 1/4
        col = int(np.argmin(np.abs(azimuth - bearing)))
        assert is_sky(img[row, col]), bearing
    # A building to the east appears at three quarters of the width.
    layers = flat_layers()
    add_block(layers, 15, 30, -6, 6, 40.0)
    img = render_street.render_panorama(layers, 0.0, 0.0, size, OVERCAST_BLUE, sky_seed=0)
    assert is_red(img[row, 3 * size // 2]) and is_sky(img[row, size])


def test_ground_photo_looks_along_its_heading() -> None:
    layers = flat_layers()
    add_block(layers, -6, 6, 15, 30, 40.0)
    towards = render_street.render_ground(layers, 0.0, 0.0, 48, 0.0, OVERCAST_BLUE, sky_seed=0)
    away = render_street.render_ground(layers, 0.0, 0.0, 48, 180.0, OVERCAST_BLUE, sky_seed=0)
    assert is_red(towards[10, 24]) and is_sky(away[10, 24])
    assert is_sky(towards[10, 1]) or is_sky(
        towards[10, 46]
    )  # the 12 m wide building does not fill 90 degrees


def test_crop_and_satellite_are_north_up(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    city = world.CityMap(cfg.seed, world.world_side(cfg))
    site = world.sample_sites(cfg, city)[0]
    layers = world.site_layers(cfg, city, site)
    n, res = layers.size, layers.res
    assert n == 96 and res == pytest.approx(2.0)
    cols = np.arange(n)
    north_row = city.labels(layers.x0 + (cols + 0.5) * res, np.full(n, layers.y0 - 0.5 * res))
    assert np.array_equal(layers.ground[0], north_row)
    west_col = city.labels(np.full(n, layers.x0 + 0.5 * res), layers.y0 - (cols + 0.5) * res)
    assert np.array_equal(layers.ground[:, 0], west_col)
    assert layers.x0 + n * res / 2 == pytest.approx(site.x) and layers.y0 - n * res / 2 == pytest.approx(
        site.y
    )


def test_panorama_skyline_matches_the_map(tmp_path: Path) -> None:
    """In a generated city, the rendered skyline is the map's skyline at the documented azimuths."""
    cfg = small_config(tmp_path, tile_size=128, locations=4)
    city = world.CityMap(cfg.seed, world.world_side(cfg))
    sites = world.sample_sites(cfg, city)
    d = np.arange(0.5, 90.0, 0.1)
    checked = 0
    for site in sites:
        layers = world.site_layers(cfg, city, site)
        azimuth, elevation = render_street.panorama_angles(128, 64)
        documented = (np.arange(128) + 0.5) / 128 * 360 - 180  # docs/world.md: north at the centre
        assert np.allclose(azimuth, documented)
        slopes = np.tan(np.radians(elevation))[:, None] * np.ones((1, 128))
        hits = render_street.street_hits(layers, site.x, site.y, documented, slopes)
        rendered = elevation[np.argmax(hits.seen, axis=0)]
        a = np.radians(documented)[:, None]  # clockwise from north: east is +x
        idx, _ = layers.index(site.x + np.sin(a) * d, site.y + np.cos(a) * d)
        heights = layers.height.ravel()[idx]
        expected = np.degrees(np.arctan(((heights - render_street.CAMERA_HEIGHT_M) / d).max(axis=1)))
        if np.ptp(expected) < 10:  # an open square has no skyline to align
            continue
        checked += 1
        pixel = 180.0 / 64
        assert np.median(np.abs(rendered - expected)) < pixel
        for shift in (32, 64, 96):  # a panorama off by 90, 180 or 270 degrees would not match
            assert np.median(np.abs(rendered - np.roll(expected, shift))) > np.median(
                np.abs(rendered - expected)
            )
    assert checked >= 2


def test_drone_looks_at_the_location() -> None:
    """The drone's optical axis meets the ground at the location, whatever its azimuth."""
    layers = flat_layers(n=192, res=1.0)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        img, pose = render_drone.render_drone(layers, 0.0, 0.0, 33, 128.0, OVERCAST_BLUE, rng)
        assert img.shape == (33, 33, 3) and 55 <= pose["drone_pitch_deg"] <= 65
    layers = flat_layers(n=192, res=1.0)
    add_block(layers, -3, 3, -3, 3, 2.0)  # a red roof exactly at the location
    img, _ = render_drone.render_drone(layers, 0.0, 0.0, 33, 128.0, OVERCAST_BLUE, np.random.default_rng(0))
    assert is_red(img[16, 16]) and not is_red(img[0, 0])


# --- difficulty --------------------------------------------------------------------------------------------


def test_colour_histograms_do_not_solve_it(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, locations=24, distractors=0, tile_size=64, query_size=64)
    world.generate_world(cfg)
    results = {r.modality: r for r in world.histogram_baseline(cfg.output)}
    assert set(results) == {m.value for m in Modality.query_modalities()}
    for r in results.values():
        assert r.queries == 24 and r.gallery == 24
        assert r.recall[1] <= 0.5, (r.modality, r.recall)
        assert r.recall[1] <= r.recall[5]
    assert np.mean([r.recall[1] for r in results.values()]) <= 0.3
    # Control: the same machinery finds a tile given the tile itself, so the low figures above are real.
    root = Path(cfg.output)
    text = (root / MANIFEST_FILE).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        r["query_uri"] = r["tile_uri"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (root / MANIFEST_FILE).write_text(buf.getvalue())
    assert all(r.recall[1] == 1.0 for r in world.histogram_baseline(cfg.output))


def test_baseline_ties_count_against_the_query(tmp_path: Path) -> None:
    """The baseline ranks by the platform's metrics: a tie is a miss, as in evaluation.

    Identical images give every tile the same score; a tie rule in the query's favour would report a
    perfect R@1 for a method that cannot tell the tiles apart."""
    root = tmp_path / "flat"
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    rows = []
    for i in range(1, 4):
        site = f"w{i:05d}"
        for folder in ("satellite", "drone"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(grey).save(root / folder / f"{site}.jpg")
        uris = {"query_uri": f"drone/{site}.jpg", "modality": "drone", "tile_uri": f"satellite/{site}.jpg"}
        rows.append({**uris, "location_id": site, "lat": "0", "lon": "0", "split": ""})
    with (root / MANIFEST_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for metric in ("intersection", "chi2"):
        (result,) = world.histogram_baseline(str(root), metric=metric, ks=(1, 2, 3))
        assert (result.queries, result.gallery) == (3, 3)
        assert result.recall == {1: 0.0, 2: 0.0, 3: 1.0}, metric


# --- user errors through the command line ------------------------------------------------------------------


def run_world(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from gleam_cli.main import app

    result = CliRunner().invoke(app, ["world", "--set", "tile_size=32", "--set", "query_size=32", *args])
    return result.exit_code, result.output


def assert_one_error(output: str, *fragments: str) -> None:
    """One `error:` message that says what to fix, and no traceback."""
    assert output.startswith("error:") and output.count("error:") == 1, output
    assert "Traceback" not in output
    flat = " ".join(output.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, output)


def test_cli_refuses_an_output_holding_other_files_and_keeps_them(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "satellite").mkdir(parents=True)
    (out / "satellite" / "holiday.jpg").write_bytes(b"not the world's")
    (out / "notes.txt").write_text("keep me")
    code, output = run_world("--output", str(out), "--locations", "2")
    assert code == 3
    assert_one_error(output, "notes.txt", "new or empty folder")
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "satellite" / "holiday.jpg").read_bytes() == b"not the world's"


def test_cli_refuses_a_file_as_output(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    code, output = run_world("--output", str(target), "--locations", "2")
    assert code == 3
    assert_one_error(output, "is a file", "give a folder")
    assert target.read_text() == "x"


def test_cli_rejects_a_blank_output_and_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = run_world("--output", " ", "--locations", "2")
    assert code == 2
    assert_one_error(output, "output", "give a store URI or a folder")
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory
    code, output = run_world("--output", str(tmp_path / "w"), "--set", "modalities=[satellite]")
    assert code == 2
    assert_one_error(output, "modalities", "query modalities only")


def test_cli_refuses_a_world_from_another_config_without_overwrite(tmp_path: Path) -> None:
    out = str(tmp_path / "w")
    assert run_world("--output", out, "--locations", "2", "--seed", "1")[0] == 0
    code, output = run_world("--output", out, "--locations", "2", "--seed", "2")
    assert code == 3
    assert_one_error(output, "another config", "overwrite=true")
    assert storage.read_json(str(Path(out) / MARKER_FILE))["seed"] == 1


# --- located worlds: query offsets, a grid gallery, sets with an odd photo out ------------------------------

TINY = {"tile_size": 32, "query_size": 32, "tile_metres": 64.0, "seed": 11}


def read_poses(root: Path) -> list[dict[str, str]]:
    with (root / POSES_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_default_configs_keep_their_fingerprints() -> None:
    """The later options count only when set: worlds made before them are still recognised and reused."""
    assert world.fingerprint(WorldConfig(output="x")) == "1-17cc90e8fbbad0d3"  # measured before the options
    small = WorldConfig(output="x", locations=3, distractors=1, seed=7, tile_size=64, query_size=48)
    assert world.fingerprint(small) == "1-9a045237425725f0"
    explicit = small.model_copy(update={"query_offset_m": 0.0, "gallery": "sites", "set_size": 1})
    assert world.fingerprint(explicit) == "1-9a045237425725f0" and not explicit.located
    for change in ({"query_offset_m": 5.0}, {"gallery": "grid", "distractors": 0}, {"set_size": 2}):
        assert world.fingerprint(small.model_copy(update=change)) != "1-9a045237425725f0", change


def test_located_options_are_validated() -> None:
    cases = [
        ({"query_offset_m": 65}, "query_offset_m 65 is more than tile_metres / 2"),
        ({"gallery": "grid", "distractors": 2}, "distractors must be 0 with gallery: grid"),
        ({"gallery": "grid", "grid_stride_m": 129}, "grid_stride_m 129 must be between"),
        ({"grid_stride_m": 32}, "grid_stride_m applies to gallery: grid only"),
        ({"set_outliers": 0.5}, "set_outliers needs set_size >= 2"),
        ({"set_outliers": 1.5, "set_size": 2}, "set_outliers"),
        ({"gallery": "raster"}, "gallery"),
    ]
    for values, message in cases:
        with pytest.raises(gconfig.ConfigError, match=message):
            gconfig.parse_config(WorldConfig, {"output": "x", **values})
    assert WorldConfig(output="x", gallery="grid").stride_m == 64.0
    shipped = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "world_located.yaml"
    located = gconfig.load_config(WorldConfig, shipped, ["output=x"])
    assert located.located and located.gallery == "grid" and located.set_outliers > 0


def test_query_offsets_are_within_the_radius_on_open_ground_and_recorded(tmp_path: Path) -> None:
    from gleam.geo import distance_m, latlon_to_offset

    cfg = WorldConfig(output=str(tmp_path / "w"), locations=4, distractors=1, query_offset_m=20, **TINY)
    world.generate_world(cfg)
    root = Path(cfg.output)
    columns, rows = read_manifest(root)
    assert columns[-2:] == ["gsd_m", "set_id"]
    tiles = [r for r in rows if not r["query_uri"]]
    assert rows[: len(tiles)] == tiles and len(tiles) == 5  # tile rows first, distractor included
    assert {r["gsd_m"] for r in tiles} == {"2"} and all(r["gsd_m"] == "" for r in rows[5:])
    tile_at = {r["tile_uri"]: (float(r["lat"]), float(r["lon"])) for r in tiles}
    poses = {p["query_uri"]: p for p in read_poses(root)}
    city = world.build_city(cfg)
    offsets = []
    for r in rows[5:]:
        pose = poses[r["query_uri"]]
        east, north = float(pose["east_m"]), float(pose["north_m"])
        assert (east, north) == (float(pose["place_east_m"]), float(pose["place_north_m"]))
        apart = distance_m(float(r["lat"]), float(r["lon"]), *tile_at[r["tile_uri"]])
        assert apart == pytest.approx(math.hypot(east, north), abs=0.02)  # within centimetres
        seen = latlon_to_offset(*tile_at[r["tile_uri"]], float(r["lat"]), float(r["lon"]))
        assert seen == pytest.approx((east, north), abs=0.02)  # the sign: camera = tile centre + offset
        assert math.hypot(east, north) <= 20 + 1e-6 and r["set_id"] == ""
        assert city.labels(np.array([float(pose["x_m"])]), np.array([float(pose["y_m"])]))[0] not in (
            BUILDING,
            WATER,
        )
        offsets.append(math.hypot(east, north))
    assert np.median(offsets) > 5  # spread over the disc, not at the centre
    place = {p["query_uri"].split("/")[1].split(".")[0] + p["modality"]: p for p in poses.values()}
    for site in ("w00001", "w00002", "w00003", "w00004"):  # one street-level capture: one camera
        assert place[site + "panorama"]["x_m"] == place[site + "ground"]["x_m"]
        assert place[site + "drone"]["x_m"] != place[site + "streetmap"]["x_m"]


def test_grid_gallery_overlaps_and_each_query_has_the_nearest_tile(tmp_path: Path) -> None:
    cfg = WorldConfig(
        output=str(tmp_path / "w"), locations=3, query_offset_m=30, gallery="grid", grid_stride_m=24, **TINY
    )
    summary = world.generate_world(cfg)
    plan = world.plan_world(cfg)
    centres = {t.tile_id: (t.x, t.y) for t in plan.tiles}
    assert summary.tiles == len(centres) == len(list((Path(cfg.output) / "satellite").iterdir()))
    assert list(centres) == [f"g{i:05d}" for i in range(1, len(centres) + 1)]
    xs, ys = sorted({x for x, _ in centres.values()}), sorted({y for _, y in centres.values()})
    assert np.allclose(np.diff(xs), 24) and np.allclose(np.diff(ys), 24)  # stride 24 < 64 m: overlap
    assert len(centres) == len(xs) * len(ys)
    _, rows = read_manifest(Path(cfg.output))
    assert {r["location_id"] for r in rows} <= set(centres) and rows[0]["tile_uri"] == "satellite/g00001.jpg"
    grid = np.array(list(centres.values()))
    for pose in read_poses(Path(cfg.output)):
        camera = np.array([float(pose["x_m"]), float(pose["y_m"])])
        nearest = list(centres)[int(np.argmin(np.hypot(*(grid - camera).T)))]
        tile = centres[pose["location_id"]]
        assert math.dist(camera, tile) == pytest.approx(math.dist(camera, centres[nearest]), abs=1e-6)
        east, north = float(pose["east_m"]), float(pose["north_m"])
        assert (east, north) == pytest.approx(tuple(camera - tile), abs=1e-3)
        assert max(abs(east), abs(north)) <= 12 + 1e-3  # inside the tile, within half a stride


def test_sets_have_their_photos_and_an_exact_share_of_odd_photos_out(tmp_path: Path) -> None:
    cfg = WorldConfig(
        output=str(tmp_path / "w"),
        locations=4,
        modalities=["drone", "ground"],
        query_offset_m=10,
        set_size=3,
        set_outliers=0.5,
        **TINY,
    )
    summary = world.generate_world(cfg)
    root = Path(cfg.output)
    assert summary.counts == {"satellite": 4, "drone": 12, "ground": 12}
    _, rows = read_manifest(root)
    queries = [r for r in rows if r["query_uri"]]
    sets: dict[str, list[dict[str, str]]] = {}
    for r in queries:
        sets.setdefault(r["set_id"], []).append(r)
    assert len(sets) == 8 and all(len(photos) == 3 for photos in sets.values())
    for set_id, photos in sets.items():
        place, modality = set_id.split("-")
        assert {(p["location_id"], p["modality"]) for p in photos} == {(place, modality)}
        assert sorted(p["query_uri"] for p in photos) == [f"{modality}/{place}_{k}.jpg" for k in (1, 2, 3)]
    poses = read_poses(root)
    odd = [p for p in poses if p["outlier_of"]]
    assert len(odd) == 4  # exactly half of the 8 sets, one photo each
    assert len({p["outlier_of"] for p in odd}) == 4
    for p in odd:
        assert p["outlier_of"] == p["set_id"] and p["shown_place_id"] != p["place_id"]
        assert math.hypot(float(p["place_east_m"]), float(p["place_north_m"])) <= 10 + 1e-6
        assert math.hypot(float(p["east_m"]), float(p["north_m"])) > world.min_spacing(cfg) - 10
    assert all(p["shown_place_id"] == p["place_id"] for p in poses if not p["outlier_of"])
    meta = storage.read_json(str(root / MARKER_FILE))
    assert (meta["queries"], meta["sets"], meta["outliers"]) == (24, 8, 4)
    assert meta["config"]["set_outliers"] == 0.5 and "gallery" not in meta["config"]


def test_world_source_gives_every_tile_its_metres_per_pixel(tmp_path: Path) -> None:
    """A world of the first layout has no gsd_m column: the source takes it from world.json."""
    from gleam.corpus.sources.world import WorldSource, list_records

    cfg = small_config(tmp_path, locations=2, distractors=1)
    world.generate_world(cfg)
    records = list(list_records(WorldSource(kind="world", uri=cfg.output)))
    tiles = [r for r in records if r.role == "tile"]
    assert len(tiles) == 3 and {r.gsd_m for r in tiles} == {128 / 64}
    assert all(r.gsd_m is None and r.set_id is None for r in records if r.role == "query")
