// The GLEAM page: plain JS against the same /v1 API as any client (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { files: [], objectUrls: [] };

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

async function tileImage(tileId, img) {
  const response = await fetch(`/v1/tiles/${encodeURIComponent(tileId)}`, { headers: authHeaders() });
  if (!response.ok) { img.alt = `tile unavailable (${response.status})`; return; }
  const url = URL.createObjectURL(await response.blob());
  state.objectUrls.push(url);
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
  const where = candidate.lat === null ? "no coordinates" : `${fmt(candidate.lat, 5)}, ${fmt(candidate.lon, 5)}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = `<b>#${rank}</b> score <b data-testid="score">${fmt(candidate.score)}</b><br>` +
    `<span data-testid="coords">${where}</span><br><span class="tile-id"></span>`;
  meta.querySelector(".tile-id").textContent = candidate.tile_id;
  li.append(img, meta);
  li.addEventListener("click", () => explain(candidate.tile_id, li));
  return li;
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
    const response = await fetch("/v1/localize", { method: "POST", headers: authHeaders(), body: queryForm({ k: $("k").value }) });
    if (!response.ok) { showError(await apiError(response)); $("results").hidden = true; return; }
    const body = await response.json();
    $("labels").textContent = `index ${body.index.name}/${body.index.version} · encoder ${body.encoder.fingerprint.slice(0, 12)} · ${body.took_ms} ms`;
    $("candidates").replaceChildren(...body.candidates.map((c, i) => candidateItem(c, i + 1)));
    $("results").hidden = false;
  } catch (error) {
    showError(`network error: ${error}`);
  } finally {
    $("localize").disabled = false;
  }
}

async function explain(tileId, item) {
  showError("");
  document.querySelectorAll("#candidates li").forEach((li) => li.classList.toggle("active", li === item));
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
    : `${answer.match ? "Same place" : "Not the same place"} (confidence ${fmt(answer.confidence, 2)})`;
  $("reasoning").textContent = answer.reasoning || (answer.parsed === false ? `unparsed model answer: ${answer.raw}` : "");
  $("source").textContent = `reasoning source: ${answer.reasoning_source}`;
  const ev = answer.evidence || {};
  const rows = [["similarity", fmt(ev.similarity)], ["threshold", fmt(ev.threshold)], ["rank", ev.rank ?? "n/a"], ["margin", fmt(ev.margin)]];
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
