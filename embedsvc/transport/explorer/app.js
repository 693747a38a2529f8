// The embedsvc explorer: plain JavaScript over the HTTP/JSON API (the same calls `curl` makes). Each page keeps its
// state in the URL, so a view can be shared and reloaded; errors from the API are shown, never swallowed.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { models: [], collections: [], latents: [], samples: [], a: null, b: null, frames: [], travel: [] };

// ---- the API -------------------------------------------------------------------------------------------------------

function headers() {
  const h = { "content-type": "application/json" };
  const key = sessionStorage.getItem("embedsvc-key");
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function failure(response) {
  let body = {};
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  const reason = body.reason ? " " + body.reason : "";
  // The next step in this page's words (errors.Hint in the server): the key goes in the field at the top.
  const hint = (body.metadata || {}).hint;
  const message = hint === "send-api-key" ? "no API key: enter one in the API key field at the top of the page" : body.message;
  return new Error(`${body.code || response.status}${reason}: ${message || response.statusText}`);
}

async function api(method, body) {
  const response = await fetch("/embedsvc.v1." + method, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response.json();
}

async function stream(method, body) {
  const response = await fetch("/embedsvc.v1." + method, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  const messages = [];
  for (const line of (await response.text()).split("\n")) {
    if (!line.trim()) continue;
    const message = JSON.parse(line);
    if (message.error) throw new Error(`${message.error.code} ${message.error.reason || ""}: ${message.error.message}`);
    messages.push(message);
  }
  return messages;
}

function showError(error) {
  const box = $("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
}

function clearError() { $("error").hidden = true; }

async function guarded(fn) {
  clearError();
  try { await fn(); } catch (error) { showError(error); }
}

function setParams(values) {
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || v === null || v === "") params.delete(k); else params.set(k, String(v));
  }
  history.replaceState(null, "", "?" + params.toString());
}

const png = (image) => "data:image/png;base64," + image.png;
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const plainMetadata = (metadata) => Object.fromEntries(Object.entries(metadata || {}).map(([k, v]) => [k, unwrap(v)]));

function unwrap(value) {
  const [kind, inner] = Object.entries(value || {})[0] || [];
  if (kind === "listValue") return (inner.values || []).map(unwrap);
  if (kind === "intValue") return Number(inner);
  return inner;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text || value;
  select.appendChild(o);
}

function fillModels(select, kinds, wanted) {
  select.innerHTML = "";
  for (const m of state.models.filter((m) => kinds.includes(m.kind) && m.state === "MODEL_STATE_READY")) {
    option(select, m.name, `${m.name} (${m.dimension})`);
  }
  if (wanted) select.value = wanted;
}

async function loadCatalogue() {
  state.models = (await api("ModelService/ListModels", { pageSize: 1000 })).models || [];
  try {
    state.collections = (await api("CollectionService/ListCollections", { pageSize: 1000 })).collections || [];
  } catch (error) { state.collections = []; showError(error); }
  fillModels($("arith-model"), ["MODEL_KIND_WORD_VECTORS"]);
  const texts = new Set(state.models.filter((m) => m.kind === "MODEL_KIND_TEXT_ENCODER").map((m) => m.name));
  for (const c of state.collections.filter((c) => texts.has(c.model))) {
    option($("arith-model"), "collection:" + c.name, `${c.model} over collection ${c.name} (quoted texts)`);
  }
  if (params.get("model")) $("arith-model").value = params.get("model");
  fillModels($("map-model"), ["MODEL_KIND_WORD_VECTORS"], params.get("model"));
  fillModels($("latent-model"), LATENT_KINDS, params.get("vae"));
  for (const select of [$("map-collection"), $("search-collection")]) {
    select.innerHTML = "";
    for (const c of state.collections) option(select, c.name, `${c.name} (${c.count || 0} items${c.model ? ", " + c.model : ""})`);
  }
  if (params.get("collection")) { $("map-collection").value = params.get("collection"); $("search-collection").value = params.get("collection"); }
}

// ---- arithmetic ----------------------------------------------------------------------------------------------------

async function arithmetic() {
  const model = $("arith-model").value, expr = $("arith-expr").value.trim();
  const method = $("arith-method").value, top = Number($("arith-top").value) || 10, inputs = $("arith-inputs").checked;
  setParams({ page: "arithmetic", model, expr, method, top, inputs: inputs ? 1 : "" });
  if (model.startsWith("collection:")) return textArithmetic(model.slice("collection:".length), expr, top);
  const answer = await api("ArithmeticService/Arithmetic", {
    model, expressions: [{ text: expr }], method: method === "cosmul" ? "METHOD_COSMUL" : "METHOD_COSADD",
    topN: top, keepInputs: inputs, returnContributions: true,
  });
  const result = answer.results[0];
  const body = $("arith-hits").querySelector("tbody");
  body.innerHTML = "";
  const terms = (result.terms || []).map((t) => t.word || "vector");
  (result.hits || []).forEach((hit, i) => {
    const row = document.createElement("tr");
    row.className = "hit" + (hit.isInput ? " input" : "");
    row.dataset.word = hit.word;
    const bars = (hit.contributions || []).map((c, t) => {
      const width = Math.max(1, Math.round(Math.abs(c) * 150));
      return `<span class="bar ${c >= 0 ? "pos" : "neg"}" style="width:${width}px" title="${terms[t]}: ${c.toFixed(4)}"></span>`;
    }).join("");
    row.innerHTML = `<td>${i + 1}</td><td class="word"></td><td>${(hit.score || 0).toFixed(4)}</td><td class="bars">${bars}</td>`;
    row.querySelector(".word").textContent = hit.word;
    row.addEventListener("click", () => {
      $("arith-expr").value = `${$("arith-expr").value.trim()} + ${hit.word}`;
      guarded(arithmetic);
    });
    body.appendChild(row);
  });
}

async function textArithmetic(collection, expr, k) {
  // A text model's space has no vocabulary to rank: the expression ('"a day at the beach" - "summer" + "winter"')
  // is evaluated by the collection's model and searched among the collection's texts.
  const answer = await api("CollectionService/Search", { collection, query: { expression: { text: expr } }, options: { k } });
  const body = $("arith-hits").querySelector("tbody");
  body.innerHTML = "";
  (answer.hits || []).forEach((hit, i) => {
    const row = document.createElement("tr");
    row.className = "hit";
    row.dataset.word = hit.input || hit.id;
    row.innerHTML = `<td>${i + 1}</td><td class="word"></td><td>${(hit.score || 0).toFixed(4)}</td><td></td>`;
    row.querySelector(".word").textContent = hit.input || hit.id;
    row.addEventListener("click", () => {
      $("arith-expr").value = `${$("arith-expr").value.trim()} + "${row.dataset.word.replaceAll('"', "")}"`;
      guarded(arithmetic);
    });
    body.appendChild(row);
  });
}

// ---- map -----------------------------------------------------------------------------------------------------------

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function pointSet() {
  const source = $("map-source").value;
  if (source === "collection") return { collection: { collection: $("map-collection").value } };
  if (source === "top") return { words: { model: $("map-model").value, topN: Number($("map-top").value) || 100 } };
  const tokens = $("map-words").value.split(/[\s,]+/).filter(Boolean);
  const words = tokens.map((t) => t.split(":")[0]), groups = tokens.map((t) => t.split(":")[1] || "");
  const set = { words: { model: $("map-model").value, words } };
  if (groups.some(Boolean)) set.groups = groups;
  return set;
}

async function drawMap() {
  const source = $("map-source").value, colour = $("map-colour").value, expr = $("map-expr").value.trim();
  setParams({
    page: "map", source, model: $("map-model").value, collection: source === "collection" ? $("map-collection").value : "",
    words: source === "words" ? $("map-words").value : "", top: source === "top" ? $("map-top").value : "",
    colour, k: $("map-k").value, field: $("map-field").value, expr,
  });
  const points = pointSet();
  const request = { points, dimensions: 2, transform: [] };
  if (expr && source !== "collection") {
    const answer = await api("ArithmeticService/Arithmetic", {
      model: $("map-model").value, expressions: [{ text: expr }], topN: 1, returnQueryVector: true,
    });
    request.transform.push({ vectors: { vectors: [answer.results[0].queryVector], labels: [expr] } });
  }
  const projection = await api("MapService/Project", request);
  let groups = projection.points.map(() => 0), legend = "";
  if (points.groups && colour === "none") {
    const distinct = [...new Set(points.groups)];
    groups = points.groups.map((g) => distinct.indexOf(g));
    legend = ` · colour: groups (${distinct.join(", ")})`;
  } else if (colour === "clusters") {
    const k = Number($("map-k").value) || 0;
    const clusters = await api("MapService/Cluster", { points, k, maxK: k ? 0 : 8, seed: 1 });
    groups = clusters.assignments.map(Number);
    legend = ` · ${clusters.k} Gaussian-mixture clusters`;
  } else if (colour === "field" && source === "collection") {
    const field = $("map-field").value;
    const ids = projection.points.map((p) => p.label);
    const items = (await api("CollectionService/GetItems", { collection: $("map-collection").value, ids })).items || [];
    const values = new Map(items.map((it) => [it.id, String(plainMetadata(it.metadata)[field])]));
    const distinct = [...new Set(ids.map((id) => values.get(id)))];
    groups = ids.map((id) => distinct.indexOf(values.get(id)));
    legend = ` · colour: ${field} (${distinct.slice(0, 10).join(", ")})`;
  }
  const query = (projection.transformed || []).flatMap((set) => set.points || []);
  renderMap(projection, groups, query);
  const ratio = (projection.explainedVarianceRatio || []).map((r) => (100 * r).toFixed(1) + "%");
  $("map-info").textContent = `${projection.points.length} points · PC1 ${ratio[0]} · PC2 ${ratio[1]} of the variance${legend}`;
}

function renderMap(projection, groups, query) {
  const svg = $("map-svg"), W = 800, H = 600, M = 40, NS = "http://www.w3.org/2000/svg";
  svg.innerHTML = "";
  const all = [...projection.points, ...query].map((p) => p.coordinates);
  const xs = all.map((c) => c[0]), ys = all.map((c) => c[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => M + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * M);
  const sy = (y) => H - M - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * M);
  const ratio = (projection.explainedVarianceRatio || []).map((r) => (100 * r).toFixed(1) + "%");
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.appendChild(el);
    return el;
  };
  add("line", { x1: M, y1: H - M, x2: W - M, y2: H - M, stroke: "#999" });
  add("line", { x1: M, y1: M, x2: M, y2: H - M, stroke: "#999" });
  add("text", { x: W / 2, y: H - 10, "text-anchor": "middle" }, `PC1 (${ratio[0]} of the variance)`);
  add("text", { x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, `PC2 (${ratio[1]})`);
  const labelled = projection.points.length <= 80;
  projection.points.forEach((p, i) => {
    const [x, y] = [sx(p.coordinates[0]), sy(p.coordinates[1])];
    const dot = add("circle", { class: "point", cx: x, cy: y, r: 4, fill: PALETTE[groups[i] % PALETTE.length] });
    dot.dataset.label = p.label;
    dot.addEventListener("mousemove", (e) => tip(e, p.label));
    dot.addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
    if (labelled) add("text", { x: x + 6, y: y + 3 }, p.label);
  });
  for (const q of query) {
    const [x, y] = [sx(q.coordinates[0]), sy(q.coordinates[1])];
    add("circle", { class: "query", cx: x, cy: y, r: 7 });
    add("text", { x: x + 9, y: y + 4, "font-weight": "bold" }, q.label);
  }
}

function tip(event, text) {
  const box = $("map-tip");
  box.textContent = text;
  box.style.left = event.clientX + 12 + "px";
  box.style.top = event.clientY + 12 + "px";
  box.hidden = false;
}

// ---- latent --------------------------------------------------------------------------------------------------------

const latentOf = (image) => (image.latent && image.latent.values) || [];
const LATENT_KINDS = ["MODEL_KIND_VAE", "MODEL_KIND_GAN", "MODEL_KIND_AUTOENCODER"];
const OPERATION_NAMES = {
  LATENT_OPERATION_DECODE: "decode", LATENT_OPERATION_ENCODE: "encode", LATENT_OPERATION_SAMPLE: "sample",
  LATENT_OPERATION_ANOMALY_SCORE: "anomaly scores", LATENT_OPERATION_INPAINT: "inpaint",
};

// What the chosen model offers (ModelInfo.latentOperations): the page shows only the controls it can serve.
function latentOperations() {
  const m = state.models.find((m) => m.name === $("latent-model").value);
  return (m && m.latentOperations) || [];
}

function offerLatent() {
  const offered = latentOperations();
  document.querySelectorAll("#page-latent [data-needs]").forEach((el) => { el.hidden = !offered.includes(el.dataset.needs); });
  const m = state.models.find((m) => m.name === $("latent-model").value);
  const kind = m ? m.kind.replace("MODEL_KIND_", "").toLowerCase() : "";
  $("latent-offers").textContent = m ? `${m.name} (${kind}) offers: ${offered.map((o) => OPERATION_NAMES[o] || o).join(", ")}` +
    (offered.includes("LATENT_OPERATION_SAMPLE") ? "" : " (no prior to sample from: draw or upload digits and use them as A and B)") : "";
}

// The page's first view for the chosen model: samples when it has a prior, else its directions only.
async function showLatent() {
  offerLatent();
  if (latentOperations().includes("LATENT_OPERATION_SAMPLE")) return sample();
  setParams({ page: "latent", vae: $("latent-model").value });
  state.samples = []; state.latents = []; state.a = null; state.b = null;
  await loadDirections($("latent-model").value);
}

async function loadDirections(model) {
  const directions = (await api("LatentService/ListDirections", { model })).directions || [];
  const select = $("trav-direction");
  select.innerHTML = "";
  for (const d of directions) option(select, d.name, `${d.name} (${d.fromLabel} → ${d.toLabel})`);
  $("trav-go").disabled = directions.length === 0;
  $("trav-go").title = directions.length ? "" : "no stored direction: create one with LatentService/CreateDirection";
}

function pick(index, which) {
  state[which] = state.latents[index];
  $("interp-" + which).src = png(state.samples[index]);
  document.querySelectorAll("#latent-grid img").forEach((img, i) => {
    img.classList.toggle(which, i === index);
  });
}

async function sample() {
  const model = $("latent-model").value, seed = Number($("latent-seed").value) || 0;
  const temperature = Number($("latent-temp").value) || 1;
  setParams({ page: "latent", vae: model, seed, temp: temperature });
  const answer = await api("LatentService/Sample", { model, n: 16, seed: String(seed), temperature });
  state.samples = answer.images;
  state.latents = answer.images.map(latentOf);
  const grid = $("latent-grid");
  grid.innerHTML = "";
  answer.images.forEach((image, i) => {
    const img = document.createElement("img");
    img.src = png(image); img.alt = "sample " + i;
    img.addEventListener("click", (e) => pick(i, e.shiftKey ? "b" : "a"));
    grid.appendChild(img);
  });
  pick(0, "a"); pick(15, "b");
  await manifold();  // the manifold follows the samples: shown with them, not after a click
  await loadDirections(model);
}

async function manifold() {
  const model = $("latent-model").value;
  const projection = await api("MapService/Project", {
    points: { vectors: { vectors: state.latents.map((values) => ({ values })) } }, dimensions: 2,
  });
  const mean = projection.mean.values, [c1, c2] = projection.components.map((c) => c.values);
  const spread = (projection.explainedVariance || [1, 1]).map((v) => 2 * Math.sqrt(v));
  const latents = [];
  for (let row = 0; row < 7; row++) {
    for (let col = 0; col < 7; col++) {
      const a = (col / 3 - 1) * spread[0], b = (1 - row / 3) * spread[1];
      latents.push({ values: mean.map((m, i) => m + a * c1[i] + b * c2[i]) });
    }
  }
  const answer = await api("LatentService/DecodeLatents", { model, latents });
  const grid = $("manifold-grid");
  grid.innerHTML = "";
  for (const image of answer.images) {
    const img = document.createElement("img");
    img.src = png(image); img.alt = "manifold";
    grid.appendChild(img);
  }
}

async function interpolate() {
  if (!state.a || !state.b) throw new Error("sample (or draw and encode) first, then pick A and B");
  const steps = Number($("interp-steps").value) || 9;
  const frames = await stream("LatentService/Interpolate", {
    model: $("latent-model").value, start: { latent: { values: state.a } }, end: { latent: { values: state.b } },
    steps, mode: $("interp-mode").value,
  });
  state.frames = frames.map((m) => m.frame);
  const slider = $("interp-slider");
  slider.max = String(state.frames.length - 1);
  slider.value = "0";
  showFrame();
}

function showFrame() {
  const frame = state.frames[Number($("interp-slider").value)];
  if (frame) { $("interp-frame").src = png(frame.image); $("interp-frame").dataset.index = String(frame.index || 0); }
}

async function traverse() {
  if (!state.a) throw new Error("sample (or draw and encode) first, then pick A");
  const strengths = [-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2];
  const frames = await stream("LatentService/Traverse", {
    model: $("latent-model").value, start: { latent: { values: state.a } }, direction: $("trav-direction").value, strengths,
  });
  state.travel = frames.map((m, i) => ({ frame: m.frame, strength: strengths[i] }));
  showTravel();
}

function showTravel() {
  const step = state.travel[Number($("trav-slider").value)];
  if (step) { $("trav-frame").src = png(step.frame.image); $("trav-strength").textContent = `strength ${step.strength}`; }
}

function canvasPng(canvas) { return canvas.toDataURL("image/png").split(",")[1]; }

async function reconstruct() {
  const answer = await api("LatentService/Reconstruct", { model: $("latent-model").value, images: [{ data: canvasPng($("draw")) }] });
  $("recon-out").src = png(answer.images[0]);
}

async function drawingAs(which) {
  const canvas = $("draw");
  const answer = await api("LatentService/EncodeImages", { model: $("latent-model").value, images: [{ data: canvasPng(canvas) }] });
  state[which] = answer.codes[0].mean.values;
  $("interp-" + which).src = canvas.toDataURL("image/png");
}

async function inpaint() {
  const canvas = $("draw"), mask = document.createElement("canvas");
  mask.width = canvas.width; mask.height = canvas.height;
  const ctx = mask.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, mask.width, mask.height);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, mask.height / 2, mask.width, mask.height / 2);
  const answer = await api("LatentService/Inpaint", {
    model: $("latent-model").value, image: { data: canvasPng(canvas) }, mask: { data: canvasPng(mask) }, steps: 200,
  });
  $("recon-out").src = png(answer.image);
}

function setUpCanvas() {
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineWidth = 9; ctx.lineCap = "round"; ctx.strokeStyle = "#fff";
    ctx.lineTo(...at(e)); ctx.stroke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("draw-clear").addEventListener("click", clear);
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    const bitmap = await createImageBitmap(file);
    clear();
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  });
}

// ---- search --------------------------------------------------------------------------------------------------------

async function search() {
  const collection = $("search-collection").value, q = $("search-query").value.trim(), as = $("search-as").value;
  const filter = $("search-filter").value.trim(), k = Number($("search-k").value) || 10, mode = $("search-mode").value;
  setParams({ page: "search", collection, q, as, filter, k, mode });
  const info = state.collections.find((c) => c.name === collection) || {};
  const vae = state.models.find((m) => m.name === info.model && LATENT_KINDS.includes(m.kind));
  let query;
  const file = $("search-image").files[0];
  if (file) query = { image: { data: b64(await file.arrayBuffer()) } };
  else if (as === "expression") query = { expression: { text: q } };
  else if (as === "item") query = { itemId: q };
  else query = { input: q };
  const options = { k, filter, includeVectors: !!vae };
  if (mode) options.mode = "SEARCH_MODE_" + mode.toUpperCase();
  const answer = await api("CollectionService/Search", { collection, query, options });
  const hits = answer.hits || [];
  $("search-report").textContent = reportLine(answer.retrieval || {});
  let thumbs = [];
  if (vae && hits.length) {
    thumbs = (await api("LatentService/DecodeLatents", { model: vae.name, latents: hits.map((h) => h.vector) })).images;
  }
  const body = $("search-hits").querySelector("tbody");
  body.innerHTML = "";
  hits.forEach((hit, i) => {
    const row = document.createElement("tr");
    row.className = "result";
    row.innerHTML = `<td>${i + 1}</td><td class="id"></td><td>${(hit.score || 0).toFixed(4)}</td><td class="why"></td><td class="input"></td><td class="meta"></td>`;
    row.querySelector(".id").textContent = hit.id + (hit.isInput ? " *" : "");
    row.querySelector(".why").textContent = explained(hit.explanation);
    if (thumbs[i]) {
      const img = document.createElement("img");
      img.className = "hit-thumb"; img.src = png(thumbs[i]); img.alt = hit.id;
      row.querySelector(".input").appendChild(img);
    } else {
      row.querySelector(".input").textContent = hit.input || "";
    }
    row.querySelector(".meta").textContent = JSON.stringify(plainMetadata(hit.metadata));
    body.appendChild(row);
  });
  if (!hits.length) body.innerHTML = "<tr><td colspan=6>no hits</td></tr>";
}

// A hit's explanation in a few words: its rank and score on each side, and what later stages gave it.
function explained(e) {
  if (!e) return "";
  const parts = [];
  if (e.denseRank) parts.push(`dense #${e.denseRank} ${(e.denseScore || 0).toFixed(3)}`);
  if (e.keywordRank) parts.push(`keyword #${e.keywordRank} ${(e.keywordScore || 0).toFixed(3)}`);
  if (e.rerankScore !== undefined) parts.push(`rerank ${e.rerankScore.toFixed(3)}`);
  if (e.mmrScore !== undefined) parts.push(`mmr ${e.mmrScore.toFixed(3)}`);
  return parts.join(" · ");
}

// How the search ran (the response's RetrievalReport): mode, fusion, and what it noticed.
function reportLine(r) {
  const mode = (r.mode || "SEARCH_MODE_DENSE").replace("SEARCH_MODE_", "").toLowerCase();
  let line = `mode: ${mode}`;
  if (r.fusion) {
    const f = r.fusion, method = (f.method || "").replace("FUSION_METHOD_", "").toLowerCase();
    line += `, ${method} fusion` + (method === "rrf" ? ` (k ${f.rrfK})` : ` (dense weight ${f.denseWeight})`);
    line += `, ${f.candidates} candidates a side`;
  }
  if (r.keywordLanguage) line += `, keywords in ${r.keywordLanguage}`;
  for (const n of r.notices || []) line += ` — ${(n.notice || "").replace("SEARCH_NOTICE_", "").toLowerCase().replaceAll("_", " ")}`;
  return line;
}

// ---- operations ----------------------------------------------------------------------------------------------------

const seconds = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 60 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);

function operationMetadata(op) {
  // OperationMetadata travels as a google.protobuf.Any: its fields sit beside "@type" in proto3 JSON.
  return op.metadata || {};
}

function outcome(op, meta) {
  if (op.error) return `${op.error.code || ""} ${(op.error.details || []).map((d) => d.reason).filter(Boolean).join(" ")}: ${op.error.message || ""}`;
  if (!op.done) return meta.cancelRequested ? "cancelling" : "running";
  const r = op.response || {};
  if (meta.kind === "reembed") {
    const switched = (r.switchedAliases || []).join(", ") || "no alias";
    return `${(r.collection || {}).name || ""}: ${r.reembedded || 0} items, switched ${switched}` + (r.dropped ? `, left out ${r.dropped}` : "");
  }
  if (meta.kind === "snapshot") return `${r.name || ""} (${r.count || 0} items)`;
  return r.name ? `${r.name} (${r.count || 0} items)` : "done";
}

let opsTimer = null;

async function showOperations() {
  const collection = $("ops-collection").value.trim();
  setParams({ page: "operations", collection });
  const answer = await api("OperationService/ListOperations", { pageSize: 100, collection });
  const body = $("ops-table").querySelector("tbody");
  body.innerHTML = "";
  const operations = answer.operations || [];
  for (const op of operations) {
    const meta = operationMetadata(op);
    const done = Number(meta.doneUnits || 0), total = Number(meta.totalUnits || 0);
    const row = document.createElement("tr");
    row.className = "operation";
    row.dataset.name = op.name;
    row.dataset.kind = meta.kind || "";
    row.dataset.done = op.done ? "1" : "0";
    row.innerHTML = `<td class="name"></td><td>${meta.kind || ""}</td><td class="col"></td><td class="stage"></td>
      <td class="progress"><progress max="${total || 1}" value="${total ? done : 0}"></progress> <span></span></td>
      <td>${meta.unitsPerSecond ? Math.round(meta.unitsPerSecond) + "/s" : ""}</td>
      <td>${!op.done && meta.etaSeconds ? seconds(meta.etaSeconds) : ""}</td><td class="outcome"></td><td></td>`;
    row.querySelector(".name").textContent = op.name.replace("operations/", "");
    row.querySelector(".col").textContent = meta.collection || "";
    const target = (meta.reembed || {}).target;
    row.querySelector(".stage").textContent = (meta.stage || "") + (target ? ` → ${target}` : "");
    row.querySelector(".progress span").textContent = total ? `${done} / ${total}` : "";
    row.querySelector(".outcome").textContent = outcome(op, meta);
    if (!op.done) {
      const cancel = document.createElement("button");
      cancel.type = "button"; cancel.textContent = "Cancel";
      cancel.addEventListener("click", () => guarded(async () => {
        await api("OperationService/CancelOperation", { name: op.name });
        await showOperations();
      }));
      row.lastElementChild.appendChild(cancel);
    }
    body.appendChild(row);
  }
  if (!operations.length) body.innerHTML = "<tr><td colspan=9>no operations</td></tr>";
  clearTimeout(opsTimer);
  if (operations.some((op) => !op.done)) opsTimer = setTimeout(() => guarded(showOperations), 1000);
}

// ---- wiring --------------------------------------------------------------------------------------------------------

function showPage(page) {
  document.querySelectorAll(".page").forEach((s) => { s.hidden = s.id !== "page-" + page; });
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
}

function restoreFields() {
  const fields = {
    "arith-expr": "expr", "arith-method": "method", "arith-top": "top", "map-source": "source", "map-words": "words",
    "map-top": "top", "map-colour": "colour", "map-k": "k", "map-field": "field", "map-expr": "expr",
    "latent-seed": "seed", "latent-temp": "temp", "search-query": "q", "search-as": "as", "search-filter": "filter",
    "search-k": "k", "search-mode": "mode", "ops-collection": "collection",
  };
  const page = params.get("page") || "arithmetic";
  for (const [id, key] of Object.entries(fields)) {
    const prefix = { arithmetic: "arith", map: "map", latent: "latent", search: "search", operations: "ops" }[page];
    const belongs = id.startsWith(prefix);
    if (belongs && params.has(key)) $(id).value = params.get(key);
  }
  if (page === "arithmetic") $("arith-inputs").checked = params.get("inputs") === "1";
}

async function main() {
  const page = params.get("page") || "arithmetic";
  showPage(page);
  restoreFields();
  $("api-key").value = sessionStorage.getItem("embedsvc-key") || "";
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("embedsvc-key", $("api-key").value.trim());
    location.reload();
  });
  const submit = (form, fn) => $(form).addEventListener("submit", (e) => { e.preventDefault(); guarded(fn); });
  submit("arith-form", arithmetic);
  submit("map-form", drawMap);
  submit("latent-form", sample);
  $("latent-model").addEventListener("change", () => guarded(showLatent));
  submit("search-form", search);
  submit("ops-form", showOperations);
  $("manifold-go").addEventListener("click", () => guarded(manifold));
  $("interp-go").addEventListener("click", () => guarded(interpolate));
  $("interp-slider").addEventListener("input", showFrame);
  $("trav-go").addEventListener("click", () => guarded(traverse));
  $("trav-slider").addEventListener("input", showTravel);
  $("reconstruct-go").addEventListener("click", () => guarded(reconstruct));
  $("inpaint-go").addEventListener("click", () => guarded(inpaint));
  $("draw-as-a").addEventListener("click", () => guarded(() => drawingAs("a")));
  $("draw-as-b").addEventListener("click", () => guarded(() => drawingAs("b")));
  setUpCanvas();
  await guarded(loadCatalogue);
  // A page shows its view at once: a shared or reloaded URL's, or the default one (the map of the word list the form
  // holds, the samples and their manifold).
  if (page === "arithmetic" && $("arith-model").value) await guarded(arithmetic);
  if (page === "map" && (params.has("source") || $("map-model").value)) await guarded(drawMap);
  if (page === "latent" && $("latent-model").value) await guarded(showLatent);
  if (page === "search" && params.has("q")) await guarded(search);
  if (page === "operations") await guarded(showOperations);
  document.body.dataset.ready = "1";
}

main();
