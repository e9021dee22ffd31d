// The search page: pick an index, give an image (file, drop or paste) or words, see the top k.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const sources = new Map(); // index name -> the folders it was built from

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function libraryUrl(kind, index, path, extra = "") {
  return `/api/${kind}?index=${encodeURIComponent(index)}&path=${encodeURIComponent(path)}${extra}`;
}

// The index the address names, else the server's (`cbirq serve --index`).
async function loadIndexes() {
  const [found, defaults] = await Promise.all([api("/api/indexes"), api("/api/defaults")]);
  const chosen = params.get("index") || defaults.index;
  $("index").replaceChildren(
    ...found.map((info) => {
      sources.set(info.name, info.sources);
      const option = new Option(`${info.name} (${info.model}, ${info.count} images)`, info.name);
      option.selected = info.name === chosen;
      return option;
    }),
  );
  if (!found.length) showError("No index yet: run `cbirq index DIR` first.");
}

// A library path from the folder it was indexed from (`photos/2023/cat.jpg`): the machine's
// own folders above it say nothing and leak into screenshots; the title keeps the whole path.
function shortPath(index, path) {
  const root = (sources.get(index) || [])
    .filter((folder) => path.startsWith(`${folder}/`))
    .sort((a, b) => b.length - a.length)[0];
  return root ? path.slice(root.lastIndexOf("/") + 1) : path;
}

// Shown once the image has loaded: a file that is no image never shows as a broken one.
function showQuery(src, caption) {
  $("query").hidden = true;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

function originalLink(index, path) {
  const link = document.createElement("a");
  link.className = "original";
  link.href = libraryUrl("image", index, path);
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = "original";
  link.title = "the photo itself, full size";
  return link;
}

function resultTile(index, hit, metric, weakBelow) {
  const item = document.createElement("li");
  item.className = "result";
  const link = document.createElement("a");
  const options = new URLSearchParams({ index, path: hit.path, top: $("top").value });
  options.set("metric", $("metric").value);
  if ($("plain").checked) options.set("plain", "true");
  link.href = `/?${options}`;
  link.title = "more like this";
  const img = document.createElement("img");
  img.src = libraryUrl("thumb", index, hit.path, "&size=256");
  img.alt = hit.path;
  img.loading = "lazy";
  link.append(img);
  const caption = document.createElement("p");
  const cosine = hit.cosine === undefined ? "" : ` · cosine ${hit.cosine.toFixed(3)}`;
  caption.innerHTML = `<b class="rank">#${hit.rank}</b> <span class="score"></span>`;
  const score = caption.querySelector(".score");
  score.textContent = `${metric === "cosine" ? "score" : "distance"} ${hit.score.toFixed(3)}${cosine}`;
  score.title = "score: after the ranking options (centring, query expansion); cosine: plain";
  const path = document.createElement("p");
  path.className = "path";
  path.textContent = shortPath(index, hit.path);
  path.title = hit.path;
  caption.append(originalLink(index, hit.path));
  if (hit.weak) {
    // Under the model's measured no-match line: shown, but not passed off as an answer.
    item.classList.add("weak");
    const note = document.createElement("span");
    note.className = "weak-note";
    note.textContent = "no likely match";
    note.title = `cosine under ${weakBelow}: rarely a real match for this model`;
    caption.append(" ", note);
  }
  item.append(link, caption, path);
  return item;
}

async function search(form) {
  showError("");
  $("status").textContent = "searching…";
  const began = performance.now();
  try {
    const answer = await api("/api/query", { method: "POST", body: form });
    const seconds = ((performance.now() - began) / 1000).toFixed(2);
    $("status").textContent =
      `${answer.results.length} results from '${answer.index}' (${answer.model}), ` +
      `${answer.ranking}, in ${seconds} s`;
    $("results").replaceChildren(
      ...answer.results.map((hit) =>
        resultTile(answer.index, hit, answer.metric, answer.weak_below),
      ),
    );
  } catch (error) {
    $("status").textContent = "";
    $("results").replaceChildren();
    showError(error.message);
  }
}

function queryForm(extra) {
  const form = new FormData();
  form.set("index", $("index").value);
  form.set("top", $("top").value);
  form.set("metric", $("metric").value);
  if ($("plain").checked) form.set("plain", "true");
  for (const [key, value] of Object.entries(extra)) form.set(key, value);
  return form;
}

function searchFile(file) {
  if (!file) return;
  showQuery(URL.createObjectURL(file), file.name || "pasted image");
  search(queryForm({ file }));
}

function searchPath(index, path) {
  showQuery(libraryUrl("thumb", index, path, "&size=256"), shortPath(index, path));
  search(queryForm({ path }));
}

function searchText(text) {
  if (!text.trim()) return;
  $("query").hidden = true;
  search(queryForm({ text }));
}

function restoreOptions() {
  if (params.get("top")) $("top").value = params.get("top");
  if (params.get("metric")) $("metric").value = params.get("metric");
  $("plain").checked = params.get("plain") === "true";
}

function wire() {
  restoreOptions();
  $("query-image").addEventListener("load", () => ($("query").hidden = false));
  $("query-image").addEventListener("error", () => ($("query").hidden = true));
  $("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) searchFile(item.getAsFile());
  });
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchText($("text").value);
  });
}

wire();
loadIndexes()
  .then(() => {
    if (params.get("path")) searchPath($("index").value, params.get("path"));
  })
  .catch((error) => showError(error.message));
