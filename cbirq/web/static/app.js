// The search page: pick an index, give an image (file, drop or paste), see the top k.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

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

async function loadIndexes() {
  const select = $("index");
  const found = await api("/api/indexes");
  select.replaceChildren(
    ...found.map((info) => {
      const option = new Option(`${info.name} (${info.model}, ${info.count} images)`, info.name);
      option.selected = info.name === params.get("index");
      return option;
    }),
  );
  if (!found.length) showError("No index yet: run `cbirq index DIR` first.");
}

function showQuery(src, caption) {
  $("query").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

function resultTile(index, hit, metric) {
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
  path.textContent = hit.path;
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
      ...answer.results.map((hit) => resultTile(answer.index, hit, answer.metric)),
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
  showQuery(libraryUrl("thumb", index, path, "&size=256"), path);
  search(queryForm({ path }));
}

function restoreOptions() {
  if (params.get("top")) $("top").value = params.get("top");
  if (params.get("metric")) $("metric").value = params.get("metric");
  $("plain").checked = params.get("plain") === "true";
}

function wire() {
  restoreOptions();
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
  $("search").addEventListener("submit", (event) => event.preventDefault());
}

wire();
loadIndexes()
  .then(() => {
    if (params.get("path")) searchPath($("index").value, params.get("path"));
  })
  .catch((error) => showError(error.message));
