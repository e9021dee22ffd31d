// The jobs page: every job (training, index runs) with its state and progress; a training job's
// accuracy curve, an index job's counts, notes and failures.
"use strict";

const $ = (id) => document.getElementById(id);
const percent = (x) => (x === undefined || x === null ? "" : `${(100 * x).toFixed(2)}%`);
let selected = new URLSearchParams(location.search).get("job");

async function api(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function indexProgress(job) {
  if (job.state === "uploading") return `uploading ${job.uploaded}/${job.to_extract} images`;
  const share = job.to_extract ? ` (${Math.round((100 * job.done) / job.to_extract)}%)` : "";
  const failed = job.failed ? `, ${job.failed} failed` : "";
  return `${job.done}/${job.to_extract} images${share}${failed}`;
}

function trainProgress(job) {
  const step = job.steps ? `, ${Math.round((100 * job.step) / job.steps)}% of epoch` : "";
  return `epoch ${job.epoch}/${job.epochs}${job.state === "running" ? step : ""}`;
}

function jobRow(job) {
  const row = document.createElement("tr");
  row.className = "job";
  row.dataset.id = job.id;
  row.dataset.kind = job.kind;
  const index = job.kind === "index";
  const last = index ? null : job.history.at(-1);
  const rate = index ? (job.rate ? `${job.rate.toFixed(1)} images/s` : "") : last ? `test ${percent(last.test_acc)}` : "";
  const state = job.waiting ? `${job.state}: ${job.waiting}` : job.error ? `${job.state}: ${job.error}` : job.state;
  row.append(
    cell(job.id), cell(job.kind), cell(state), cell(index ? indexProgress(job) : trainProgress(job)),
    cell(rate), cell(index ? `'${job.index}' ← ${job.source}` : job.config.schedule), cell(job.worker || ""),
  );
  row.addEventListener("click", () => {
    selected = job.id;
    history.replaceState(null, "", `/jobs?job=${job.id}`);
    showJob(job);
  });
  return row;
}

function line(points, color) {
  const path = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  path.setAttribute("points", points.map(([x, y]) => `${x},${y}`).join(" "));
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", color);
  path.setAttribute("stroke-width", "2.5");
  return path;
}

function label(x, y, text, color = "#1d2430") {
  const node = document.createElementNS("http://www.w3.org/2000/svg", "text");
  node.setAttribute("x", x);
  node.setAttribute("y", y);
  node.setAttribute("fill", color);
  node.setAttribute("font-size", "13");
  node.textContent = text;
  return node;
}

function drawCurve(historyRows, epochs) {
  const svg = $("curve");
  const [left, top, width, height] = [50, 20, 640, 240];
  const x = (epoch) => left + (width * epoch) / Math.max(1, epochs);
  const y = (acc) => top + height * (1 - acc);
  const nodes = [line([[left, top], [left, top + height], [left + width, top + height]], "#8a94a6")];
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) nodes.push(label(8, y(tick) + 4, percent(tick).replace(".00", "")));
  for (const [key, color, name] of [["train_acc", "#1f77b4", "train"], ["test_acc", "#d62728", "test"]]) {
    const points = historyRows.map((h) => [x(h.epoch), y(h[key])]);
    if (points.length) nodes.push(line([[x(0), y(0.1)], ...points], color));
    nodes.push(label(left + width - 90, top + (key === "test_acc" ? 40 : 20), `${name} accuracy`, color));
  }
  nodes.push(label(left + width / 2 - 20, top + height + 30, "epoch"));
  svg.replaceChildren(...nodes);
}

function showIndexJob(job) {
  $("detail").hidden = false;
  $("curve").hidden = true;
  $("detail-title").textContent = `Index job ${job.id}: ${job.state}, index '${job.index}' (${job.model})`;
  const rows = [
    ["source", job.source], ["submitted by", job.submitted_by], ["found", job.found],
    ["unchanged", job.skipped], ["reused", job.reused], ["to extract", job.to_extract],
    ["done", job.done], ["indexed", job.indexed], ["failed", job.failed],
    ...job.notes.map((note) => ["note", note]),
    ...job.failures.map((f) => ["failed", `${f.path}: ${f.error}`]),
  ];
  $("history").replaceChildren(...rows.map(([name, value]) => {
    const row = document.createElement("tr");
    row.append(cell(name), cell(String(value)));
    return row;
  }));
}

function showJob(job) {
  if (job.kind === "index") return showIndexJob(job);
  $("detail").hidden = false;
  $("curve").hidden = false;
  $("detail-title").textContent = `Job ${job.id}: ${job.config.schedule} schedule, ${job.state}`;
  drawCurve(job.history, job.epochs);
  const head = document.createElement("tr");
  for (const name of ["epoch", "lr", "train loss", "train acc", "test loss", "test acc", "seconds"]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  $("history").replaceChildren(
    head,
    ...job.history.map((h) => {
      const row = document.createElement("tr");
      row.append(cell(h.epoch), cell(h.lr.toFixed(4)), cell(h.train_loss.toFixed(3)),
        cell(percent(h.train_acc)), cell(h.test_loss.toFixed(3)), cell(percent(h.test_acc)),
        cell(h.seconds));
      return row;
    }),
  );
}

async function refresh() {
  try {
    const jobs = await api("/api/jobs");
    $("jobs").replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) $("jobs").append(cell("No job yet: `cbirq index DIR` or `cbirq submit-train`."));
    const chosen = jobs.find((job) => job.id === selected);
    if (chosen) showJob(chosen);
    $("error").hidden = true;
  } catch (error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
  }
}

refresh();
setInterval(refresh, 2000);
