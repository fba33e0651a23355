"""The page ``GET /`` of the PII service: one self-contained HTML document (no
build step, no external assets) that calls the same ``/v1`` endpoints.

It analyzes once with every model type at the lowest threshold the server
allows, so the per-type sliders can show entities appearing and disappearing
without another request (an entity shows when its calibrated score reaches
its slider; pattern matches always show); "Redact" sends the slider values as
the request's thresholds. Offsets are code points, so the script slices
``Array.from(text)``, not the UTF-16 string.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>spacy-ner-plus PII service</title>
<style>
  body { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
  textarea { width: 100%; height: 8em; font-size: 1em; }
  button, select { font-size: 1em; margin: 0.4em 0.4em 0.4em 0; }
  #sliders div { display: flex; align-items: center; gap: 0.6em; margin: 0.2em 0; }
  #sliders label { width: 12em; font-weight: bold; }
  #entities { line-height: 2.5; direction: ltr; white-space: pre-wrap; border: 1px solid #ddd; padding: 1em; min-height: 2em; }
  mark.entity { padding: 0.25em 0.35em; margin: 0 0.25em; line-height: 1; border-radius: 0.35em; background: #ddd; }
  mark.entity .label { font-size: 0.7em; font-weight: bold; line-height: 1; border-radius: 0.35em; vertical-align: middle; margin-left: 0.5em; text-transform: uppercase; }
  #redacted { white-space: pre-wrap; border: 1px solid #ddd; padding: 1em; min-height: 2em; background: #fafafa; }
  #error { color: #b00020; }
</style>
</head>
<body>
<h1>PII service</h1>
<p>Model <span id="model"></span>. Scores are calibrated confidences; move a slider to change that type's threshold.</p>
<textarea id="text" placeholder="Paste text here">Mary works for Acme Corp in Paris .</textarea>
<div>
  <button id="analyze">Analyze</button>
  <select id="operator">
    <option value="replace">replace</option><option value="mask">mask</option><option value="redact">redact</option>
    <option value="hash">hash</option><option value="keep">keep</option>
  </select>
  <button id="redact">Redact</button>
</div>
<div id="error" role="alert"></div>
<h2>Thresholds</h2>
<div id="sliders"></div>
<h2>Entities</h2>
<div id="entities"></div>
<h2>Redacted</h2>
<div id="redacted"></div>
<script>
"use strict";
const COLORS = ["#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#aa9cfc", "#c887fb", "#9cc9cc", "#ffeb80", "#ff8197", "#f0d0ff", "#bfe1d9", "#e4e7d2"];
const state = { types: [], bounds: {}, text: "", candidates: [] };

function $(id) { return document.getElementById(id); }
function showError(message) { $("error").textContent = message || ""; }
function colorOf(type) { return COLORS[Math.max(0, state.types.indexOf(type)) % COLORS.length]; }

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) {
    const err = data.error || {};
    throw new Error(`${response.status} ${err.kind || ""}: ${err.message || JSON.stringify(data)}`);
  }
  return data;
}

function sliderValue(type) {
  const input = $("slider-" + type);
  return input ? parseFloat(input.value) : null;
}

function thresholdsFromSliders() {
  const out = {};
  for (const type of Object.keys(state.bounds)) out[type] = sliderValue(type);
  return out;
}

function render() {
  const chars = Array.from(state.text);  // offsets are code points
  const box = $("entities");
  box.textContent = "";
  let cursor = 0;
  for (const e of state.candidates) {
    const threshold = sliderValue(e.entity_type);
    if (e.source === "model" && threshold !== null && e.score < threshold) continue;
    box.append(document.createTextNode(chars.slice(cursor, e.start).join("")));
    const mark = document.createElement("mark");
    mark.className = "entity";
    mark.dataset.type = e.entity_type;
    mark.dataset.score = e.score === null ? "" : String(e.score);
    mark.style.background = colorOf(e.entity_type);
    mark.append(document.createTextNode(chars.slice(e.start, e.end).join("")));
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = e.entity_type + (e.score === null ? "" : " " + e.score.toFixed(2));
    mark.append(label);
    box.append(mark);
    cursor = e.end;
  }
  box.append(document.createTextNode(chars.slice(cursor).join("")));
}

async function init() {
  try {
    const [entities, config] = await Promise.all([call("GET", "/v1/entities"), call("GET", "/v1/config")]);
    $("model").textContent = `${config.model.name} ${config.model.version} (config ${config.config_hash})`;
    state.types = entities.entities.map(e => e.entity_type);
    for (const option of $("operator").options) option.disabled = !config.operators.available.includes(option.value);
    const sliders = $("sliders");
    for (const e of entities.entities) {
      if (e.threshold === undefined) continue;  // a pattern-only type has no threshold
      state.bounds[e.entity_type] = [e.min_threshold, e.max_threshold];
      const row = document.createElement("div");
      const label = document.createElement("label");
      label.htmlFor = "slider-" + e.entity_type;
      label.textContent = e.entity_type;
      label.style.background = colorOf(e.entity_type);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", id: "slider-" + e.entity_type, min: e.min_threshold, max: e.max_threshold, step: 0.01, value: e.threshold });
      const value = document.createElement("output");
      value.id = "value-" + e.entity_type;
      value.textContent = Number(e.threshold).toFixed(2);
      input.addEventListener("input", () => { value.textContent = Number(input.value).toFixed(2); render(); });
      row.append(label, input, value);
      sliders.append(row);
    }
  } catch (err) { showError(err.message); }
}

$("analyze").addEventListener("click", async () => {
  showError("");
  try {
    const text = $("text").value;
    // every model type at its lowest allowed threshold: the sliders then filter locally
    const lowest = {};
    for (const [type, [lo]] of Object.entries(state.bounds)) lowest[type] = lo;
    const data = await call("POST", "/v1/analyze", { text, thresholds: lowest });
    state.text = text;
    state.candidates = data.results;
    render();
    $("entities").dataset.ready = "1";
  } catch (err) { showError(err.message); }
});

$("redact").addEventListener("click", async () => {
  showError("");
  try {
    const operator = $("operator").value;
    const data = await call("POST", "/v1/redact", { text: $("text").value, thresholds: thresholdsFromSliders(), operators: { DEFAULT: { type: operator } } });
    $("redacted").textContent = data.text;
    $("redacted").dataset.ready = "1";
  } catch (err) { showError(err.message); }
});

init();
</script>
</body>
</html>
"""
