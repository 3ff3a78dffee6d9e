// The GLEAM page: plain JS against the same /v1 API as any client (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { files: [], objectUrls: [], tiles: new Map() };

function authHeaders() {
  const token = $("token").value.trim() || localStorage.getItem("gleam-token") || "";
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${body.error.message} (${response.status} ${body.error.code})`;
  } catch (_) { /* not JSON */ }
  return `request failed: HTTP ${response.status}`;
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function setFiles(files) {
  state.files = Array.from(files).filter((f) => f.type.startsWith("image/") || f.name);
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = state.files.map((f) => URL.createObjectURL(f));
  $("previews").replaceChildren(...state.objectUrls.map((u) => Object.assign(document.createElement("img"), { src: u, alt: "query" })));
  $("drop-text").textContent = state.files.length
    ? `${state.files.length} photo${state.files.length > 1 ? "s" : ""} of one place`
    : "Choose or drop one photo, or several of the same place";
}

function queryForm(extra) {
  const form = new FormData();
  state.files.forEach((f) => form.append("image", f, f.name || "photo.jpg"));
  form.append("modality", $("modality").value);
  form.append("language", $("language").value);
  Object.entries(extra).forEach(([k, v]) => form.append(k, String(v)));
  return form;
}

// One fetch per tile and result: the card and the map marker share the object URL.
function tileUrl(tileId) {
  if (!state.tiles.has(tileId)) {
    state.tiles.set(tileId, (async () => {
      const response = await fetch(`/v1/tiles/${encodeURIComponent(tileId)}`, { headers: authHeaders() });
      if (!response.ok) return { status: response.status };
      const url = URL.createObjectURL(await response.blob());
      state.objectUrls.push(url);
      return { url };
    })());
  }
  return state.tiles.get(tileId);
}

async function tileImage(tileId, img) {
  const { url, status } = await tileUrl(tileId);
  if (!url) { img.alt = `tile unavailable (${status})`; return; }
  img.src = url;
}

function candidateItem(candidate, rank) {
  const li = document.createElement("li");
  li.dataset.tileId = candidate.tile_id;
  li.dataset.testid = "candidate";
  li.setAttribute("data-testid", "candidate");
  const img = document.createElement("img");
  img.alt = `satellite tile ${candidate.tile_id}`;
  tileImage(candidate.tile_id, img);
  const where = !hasPlace(candidate) ? "no coordinates" : `${fmt(candidate.lat, 5)}, ${fmt(candidate.lon, 5)}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = `<b>#${rank}</b> score <b data-testid="score">${fmt(candidate.score)}</b><br>` +
    `<span data-testid="coords">${where}</span><br><span class="tile-id"></span>`;
  meta.querySelector(".tile-id").textContent = candidate.tile_id;
  li.append(img, meta);
  li.addEventListener("click", () => explain(candidate.tile_id));
  return li;
}

// The map: each candidate drawn at its lat/lon as a thumbnail of its own tile image (the index's
// imagery), on no base map, with Leaflet served from /static/vendor: nothing comes from the internet.
// Thumbnails (a marker icon of fixed size) rather than image overlays scaled to the ground: the API does
// not say how much ground a tile covers, and a thumbnail stays legible, clickable and focusable at the
// zoom that fits candidates hundreds of metres apart.
const map = { view: null, layer: null, markers: new Map(), estimate: null };
// Where tiles overlap, the better candidate lies on top; the selected one and the hovered one above all.
const Z_STEP = 1000, Z_ACTIVE = 200 * Z_STEP, Z_HOVER = 300 * Z_STEP;

function hasPlace(candidate) {
  return Number.isFinite(candidate.lat) && Number.isFinite(candidate.lon);
}

function markerFor(candidate, rank) {
  const label = `#${rank} tile ${candidate.tile_id}, score ${fmt(candidate.score)}`;
  const img = document.createElement("img");
  img.alt = `satellite tile ${candidate.tile_id}, rank ${rank}, score ${fmt(candidate.score)}`;
  tileImage(candidate.tile_id, img);
  const size = rank === 1 ? 56 : 44;
  const icon = L.divIcon({ className: rank === 1 ? "tile-marker top" : "tile-marker", html: img, iconSize: [size, size] });
  const z = (101 - rank) * Z_STEP;
  const marker = L.marker([candidate.lat, candidate.lon], { icon, title: label, keyboard: true, riseOnHover: true, riseOffset: Z_HOVER, zIndexOffset: z });
  marker.on("click", () => explain(candidate.tile_id));
  marker.on("keypress", (e) => { if (e.originalEvent.key === "Enter") explain(candidate.tile_id); });
  // the rank on the tile's corner, in the tooltip pane: readable even where tiles overlap, and not in
  // the way of a click (Leaflet's tooltips take no pointer events)
  marker.bindTooltip(String(rank), {
    permanent: true, direction: "center", offset: [-size / 2, -size / 2], className: rank === 1 ? "rank top" : "rank",
  });
  marker.addTo(map.layer);
  const el = marker.getElement();
  el.setAttribute("data-testid", "map-marker");
  el.setAttribute("aria-label", label);
  Object.assign(el.dataset, { tileId: candidate.tile_id, rank: String(rank), lat: String(candidate.lat), lon: String(candidate.lon) });
  map.markers.set(candidate.tile_id, { marker, z });
}

// The location estimate: where the photo was taken and how far off that may be, in words above the map;
// on the map a marker at the estimate with its radius circle (which holds the true position for the
// stated share of the index's validation queries). Unknown: no marker, and the reason instead.
function knownLocation(location) {
  return Boolean(location) && location.method !== "unknown" && Number.isFinite(location.lat) && Number.isFinite(location.lon);
}

function metres(value) {
  return value >= 1000 ? `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)} km` : `${Math.round(value)} m`;
}

function describeLocation(location) {
  if (!location) return { text: "", note: "" };
  if (!knownLocation(location)) return { text: "Position unknown.", note: location.reason || "" };
  const radius = Number.isFinite(location.radius_m) ? ` within ${metres(location.radius_m)}` : "";
  const coverage = Number.isFinite(location.coverage)
    ? ` (a circle that held ${Math.round(location.coverage * 100)} % of this index's validation queries)` : "";
  const how = { fused: "fused from the candidates", refined: "refined inside the top tile", top1: "the top tile's centre" }[location.method] || location.method;
  return { text: `Estimated position ${fmt(location.lat, 5)}, ${fmt(location.lon, 5)}${radius}${coverage}; method: ${location.method} (${how}).`, note: location.reason || "" };
}

function showLocation(location) {
  const { text, note } = describeLocation(location);
  const el = $("location");
  el.hidden = !text;
  el.dataset.method = location ? location.method : "";
  $("location-text").textContent = text;
  $("location-note").textContent = note;
  $("location-note").hidden = !note;
}

function estimateLayer(location) {
  const label = describeLocation(location).text;
  const circle = L.circle([location.lat, location.lon], {
    radius: location.radius_m, className: "location-circle", color: "#1f6feb", weight: 2, fillOpacity: 0.08, interactive: false,
  });
  const icon = L.divIcon({ className: "location-marker", html: "", iconSize: [18, 18] });
  const marker = L.marker([location.lat, location.lon], {
    icon, title: label, keyboard: false, interactive: false, zIndexOffset: Z_HOVER + Z_STEP,
  });
  return { circle, marker, label };
}

function drawEstimate(location) {
  if (!knownLocation(location)) return;
  const { circle, marker, label } = estimateLayer(location);
  if (Number.isFinite(location.radius_m) && location.radius_m > 0) {
    circle.addTo(map.layer);
    const path = circle.getElement();
    path.setAttribute("data-testid", "location-circle");
    path.setAttribute("data-radius-m", String(location.radius_m));
  }
  marker.addTo(map.layer);
  const el = marker.getElement();
  el.setAttribute("data-testid", "location-marker");
  el.setAttribute("aria-label", label);
  Object.assign(el.dataset, { lat: String(location.lat), lon: String(location.lon), radiusM: String(location.radius_m), method: location.method });
  map.estimate = { circle, marker };
}

function showOnMap(candidates, location) {
  const placed = candidates.map((c, i) => [c, i + 1]).filter(([c]) => hasPlace(c));
  const missing = candidates.length - placed.length;
  $("map-note").textContent = missing
    ? `${missing} of ${candidates.length} candidates ${missing > 1 ? "have" : "has"} no coordinates and ${missing > 1 ? "are" : "is"} not on the map (see the cards).`
    : "";
  $("map-note").hidden = !missing;
  const usable = placed.length > 0 && typeof L !== "undefined";
  $("map").hidden = !usable;
  $("map-caption").hidden = !usable;
  map.markers.clear();
  map.estimate = null;
  if (map.layer) map.layer.clearLayers();
  if (!usable) return;
  if (!map.view) {
    // Web Mercator with no tile layer: metres stay metres at any latitude, zoom goes down to a few metres.
    map.view = L.map("map", { maxZoom: 22, zoomSnap: 0.25, zoomDelta: 0.5 });
    L.control.scale({ imperial: false }).addTo(map.view);
    map.layer = L.layerGroup().addTo(map.view);
  }
  map.view.invalidateSize();
  // the view first: a layer only reaches the page (and has an element) once the map has one; it holds
  // the candidates and the estimate's whole circle
  const bounds = L.latLngBounds(placed.map(([c]) => [c.lat, c.lon]));
  if (knownLocation(location)) bounds.extend(L.latLng(location.lat, location.lon).toBounds(2 * (location.radius_m || 0)));
  map.view.fitBounds(bounds, { padding: [48, 48], maxZoom: 19, animate: false });
  placed.forEach(([c, rank]) => markerFor(c, rank));
  drawEstimate(location);
}

// How a set of photos was fused into one query, and each photo's say in it (agreement: an odd one out
// counts less). Shown only for a set.
function showFusion(fusion) {
  const el = $("fusion");
  el.hidden = !fusion;
  if (!fusion) { el.textContent = ""; return; }
  const weights = fusion.weights.map((w, i) => `photo ${i + 1}: ${fmt(w, 2)}`).join(", ");
  el.textContent = `${fusion.weights.length} photos fused by ${fusion.method}; weights ${weights}`;
}

// The selected candidate: its card and its marker, whichever was clicked.
function highlight(tileId) {
  document.querySelectorAll("#candidates li").forEach((li) => li.classList.toggle("active", li.dataset.tileId === tileId));
  map.markers.forEach(({ marker, z }, id) => {
    const on = id === tileId;
    const el = marker.getElement();
    if (el) { el.classList.toggle("active", on); el.setAttribute("aria-pressed", String(on)); }
    marker.setZIndexOffset(on ? Z_ACTIVE : z);
  });
}

async function localize(event) {
  event.preventDefault();
  showError("");
  if (!state.files.length) { showError("Choose at least one photo first."); return; }
  const token = $("token").value.trim();
  if (token) localStorage.setItem("gleam-token", token);
  $("localize").disabled = true;
  $("explanation").hidden = true;
  try {
    const options = { k: $("k").value };
    if ($("fusion-method").value) options.fusion = $("fusion-method").value;
    if ($("refine").value) options.refine = $("refine").value;
    const response = await fetch("/v1/localize", { method: "POST", headers: authHeaders(), body: queryForm(options) });
    if (!response.ok) { showError(await apiError(response)); $("results").hidden = true; return; }
    const body = await response.json();
    $("labels").textContent = `index ${body.index.name}/${body.index.version} · encoder ${body.encoder.fingerprint.slice(0, 12)} · ${body.took_ms} ms`;
    // the index's own word on its scores (collapsed embeddings, calibration at chance): read before the ranks
    const warning = body.index.warning;
    $("index-warning").textContent = warning ? `Read these scores with care: ${warning}.` : "";
    $("index-warning").hidden = !warning;
    state.tiles = new Map();
    $("candidates").replaceChildren(...body.candidates.map((c, i) => candidateItem(c, i + 1)));
    $("results").hidden = false;
    showLocation(body.location);
    showFusion(body.fusion);
    showOnMap(body.candidates, body.location);
  } catch (error) {
    showError(`network error: ${error}`);
  } finally {
    $("localize").disabled = false;
  }
}

async function explain(tileId) {
  showError("");
  highlight(tileId);
  $("explained-tile").textContent = `tile ${tileId} (thinking...)`;
  $("explanation").hidden = false;
  const response = await fetch("/v1/explain", { method: "POST", headers: authHeaders(), body: queryForm({ tile_id: tileId }) });
  if (!response.ok) { showError(await apiError(response)); $("explanation").hidden = true; return; }
  const answer = await response.json();
  $("explained-tile").textContent = `tile ${tileId} · ${answer.took_ms} ms`;
  const verdict = $("verdict");
  verdict.className = answer.match === true ? "match" : answer.match === false ? "nomatch" : "";
  verdict.textContent = answer.match === null || answer.match === undefined
    ? "no verdict"
    : `${answer.match ? "Same place" : "Not the same place"} (${answer.confidence === null || answer.confidence === undefined ? "no calibrated confidence" : `confidence ${fmt(answer.confidence, 2)}`})`;
  $("reasoning").textContent = answer.reasoning || (answer.parsed === false ? `unparsed model answer: ${answer.raw}` : "");
  $("source").textContent = `reasoning source: ${answer.reasoning_source}`;
  // what the answer fell back on or could not say (pooled calibration, no fitted confidence, rank beyond depth)
  $("notes").replaceChildren(...(answer.notes || []).map((note) => Object.assign(document.createElement("li"), { textContent: note })));
  const ev = answer.evidence || {};
  const rows = [["similarity", fmt(ev.similarity)], ["threshold", fmt(ev.threshold)], ["rank", ev.rank ?? "n/a"], ["margin", fmt(ev.margin)],
    ["calibration", ev.calibration_used ?? "none"], ["index version", answer.index?.version ?? "n/a"]];
  $("evidence").replaceChildren(...rows.flatMap(([k, v]) => [Object.assign(document.createElement("dt"), { textContent: k }), Object.assign(document.createElement("dd"), { textContent: v })]));
  $("heatmap").src = ev.heatmap_png ? `data:image/png;base64,${ev.heatmap_png}` : "";
  $("heatmap").hidden = !ev.heatmap_png;
}

async function served() {
  try {
    const response = await fetch("/healthz");
    const body = await response.json();
    $("served").textContent = `index ${body.index.index}/${body.index.version} (${body.index.vectors} tiles) · encoder ${body.encoder.fingerprint.slice(0, 12)} · explanations from ${body.explainer.answers_from}`;
    $("token").parentElement.hidden = !body.auth;
    // the service's own defaults, named in the "service default" choices
    const defaults = body.defaults || {};
    if (defaults.fusion !== undefined) $("fusion-method").options[0].textContent = `service default (${defaults.fusion})`;
    if (defaults.refine !== undefined) $("refine").options[0].textContent = `service default (${defaults.refine === true ? "yes" : defaults.refine === false ? "no" : defaults.refine})`;
    if (Array.isArray(body.modalities)) {
      Array.from($("modality").options).forEach((o) => { o.disabled = !body.modalities.includes(o.value); });
    }
  } catch (error) {
    $("served").textContent = `service unavailable: ${error}`;
  }
}

$("images").addEventListener("change", (e) => setFiles(e.target.files));
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => setFiles(e.dataTransfer.files));
$("query").addEventListener("submit", localize);
served();
