// The page at "/": choose or drop images; each is posted to /v1/predict on its own, so one bad
// file shows its own error and the others are answered (the server batches them together).
"use strict";

let topk = 5;  // at most the model's class count, once its card is read
let canExplain = false;  // the card says whether /v1/explain can answer
const results = document.getElementById("results");
const template = document.getElementById("result-template");

function text(el, value) { el.textContent = value; return el; }

async function loadCard() {
  const card = document.getElementById("model-card");
  try {
    const response = await fetch("/v1/model");
    const m = await response.json();
    if (!response.ok) throw new Error(m.error || response.statusText);
    const pre = m.preprocessing || {};
    const rows = [
      ["Network", m.architecture],
      ["Classes", `${m.num_classes}` + (m.class_names ? ` (${m.class_names.slice(0, 5).join(", ")}${m.num_classes > 5 ? ", …" : ""})` : "")],
      ["Input", `${m.input_size}×${m.input_size}, ${m.crops} crop(s), ${pre.interpolation} resize, crop ${pre.crop_pct}`],
      ["Normalisation", `mean ${JSON.stringify(pre.mean)}, std ${JSON.stringify(pre.std)}`],
      ["Backend", `${m.backend} ${m.precision} on ${m.device}` + (m.cpu ? ` (${m.cpu})` : "")],
      ["Ensemble", `${m.models} model(s)`],
      ["Batching", `up to ${m.max_batch} images per pass, ${m.max_wait_ms} ms wait`],
    ];
    canExplain = Boolean(m.explain && m.explain.available);
    if (canExplain) rows.push(["Why?", `${m.explain.method} heatmaps at ${m.explain.layer}, from the fp32 weights`]);
    for (const item of results.querySelectorAll(".result[data-state=done] .why")) item.hidden = !canExplain;
    card.replaceChildren();
    for (const [k, v] of rows) {
      card.append(text(document.createElement("dt"), k), text(document.createElement("dd"), v));
    }
    topk = Math.max(1, Math.min(topk, m.num_classes));
    card.dataset.architecture = m.architecture;
    const shown = topk === m.num_classes ? `the probabilities of all ${topk} classes` : `their top ${topk} classes`;
    text(document.getElementById("tagline"),
      `${m.architecture}: ${m.num_classes} classes, ${m.backend} ${m.precision}. Choose images to see ${shown}.`);
  } catch (err) {
    text(document.getElementById("tagline"), `Could not load the model card: ${err.message}`);
  }
}

function showError(item, message) {
  item.classList.add("failed");
  text(item.querySelector(".status"), message);
  item.dataset.state = "error";
}

// A thumbnail the browser cannot draw (a file the server rejects, a format it lacks) becomes a
// plain tile that says so, not a broken-image icon.
function noPreview(thumb) {
  const tile = document.createElement("div");
  tile.className = "thumb none";
  tile.setAttribute("role", "img");
  tile.setAttribute("aria-label", `no preview of ${thumb.alt}`);
  tile.textContent = "no preview";
  thumb.replaceWith(tile);
}

async function classify(file, before) {
  const item = template.content.firstElementChild.cloneNode(true);
  item.dataset.file = file.name;
  item.dataset.state = "pending";
  text(item.querySelector(".file"), file.name);
  const thumb = item.querySelector(".thumb");
  thumb.alt = file.name;
  thumb.onerror = () => { URL.revokeObjectURL(thumb.src); noPreview(thumb); };
  thumb.onload = () => URL.revokeObjectURL(thumb.src);
  thumb.src = URL.createObjectURL(file);
  results.insertBefore(item, before);  // the newest choice on top, its files in the order chosen
  const started = performance.now();
  let body;
  try {
    const response = await fetch(`/v1/predict?topk=${topk}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      const reason = (body.error || "").replace(/^body: /, "");
      return showError(item, response.status === 400 ? `Not read: ${reason}` : `Error ${response.status}: ${reason}`);
    }
  } catch (err) {
    return showError(item, `The server did not answer: ${err.message}`);
  }
  const ms = performance.now() - started;
  const result = body.results[0];
  if (!result.ok) return showError(item, result.error);
  text(item.querySelector(".status"), `${ms.toFixed(0)} ms`).classList.add("timing");
  const bars = item.querySelector(".bars");
  for (const t of result.top) {
    const row = document.createElement("li");
    row.className = "bar";
    row.dataset.name = t.name;
    row.dataset.prob = t.prob;
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.max(0.5, 100 * t.prob)}%`;
    const track = document.createElement("div");
    track.className = "track";
    track.append(fill);
    row.append(text(document.createElement("span"), t.name), track,
      text(document.createElement("span"), `${(100 * t.prob).toFixed(1)}%`));
    row.children[0].className = "name";
    row.children[2].className = "prob";
    bars.append(row);
  }
  item.dataset.state = "done";
  item.dataset.ms = ms.toFixed(1);
  const why = item.querySelector(".why");
  why.hidden = !canExplain;
  why.onclick = () => toggleWhy(item, file);
}

// "Why?": the heatmap of the top class over the image, from /v1/explain; asked once, then shown
// and hidden by the same button.
async function toggleWhy(item, file) {
  const why = item.querySelector(".why");
  const figure = item.querySelector(".explain");
  const open = why.getAttribute("aria-expanded") !== "true";
  why.setAttribute("aria-expanded", String(open));
  why.textContent = open ? "Hide why" : "Why?";
  figure.hidden = !open;
  if (!open || item.dataset.explain) return;
  item.dataset.explain = "pending";
  const caption = figure.querySelector("figcaption");
  figure.classList.remove("failed");
  text(caption, "Explaining…");
  try {
    const response = await fetch("/v1/explain?target=top1", {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    const result = response.ok ? body.results[0] : { ok: false, error: body.error || `HTTP ${response.status}` };
    if (!result.ok) throw new Error(result.error);
    const img = document.createElement("img");  // made here: a result without one has no image to break
    img.className = "overlay";
    figure.prepend(img);
    img.alt = `heatmap of ${result.explained.name} over ${file.name}`;
    img.src = result.overlay;
    text(caption, `Why ${result.explained.name} (${(100 * result.explained.prob).toFixed(1)}%): red is where the ` +
      `evidence for it is strongest (${result.method} at ${result.layer}); the box is what the network saw.`);
    item.dataset.explain = "done";
  } catch (err) {
    delete item.dataset.explain;  // asked again on the next toggle
    text(caption, `Could not explain: ${err.message}`);
    figure.classList.add("failed");
  }
}

function take(files) {
  const before = results.firstChild;
  for (const file of files) classify(file, before);
}

const input = document.getElementById("file-input");
input.addEventListener("change", () => { take(input.files); input.value = ""; });
const zone = document.getElementById("drop-zone");
for (const name of ["dragenter", "dragover"]) {
  zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
}
zone.addEventListener("drop", (e) => take(e.dataTransfer.files));
loadCard();
