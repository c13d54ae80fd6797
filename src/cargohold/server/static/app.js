// The dashboard: polls api/stats and api/memo, draws with plain DOM and SVG (no build step).
// The service is private: a token typed here is kept for this tab only (sessionStorage) and
// sent as an Authorization header; previews are fetched with it and shown from blob: URLs.
// Its Content-Security-Policy allows no inline script or style: style through the CSSOM.
"use strict";
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const TOKEN_KEY = "cargohold-token";
const $ = (id) => document.getElementById(id);

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function get(url) {
  return fetch(url, { headers: authHeaders() }).then((r) => {
    if (!r.ok) throw new Error(url.replace(location.origin, "") + ": HTTP " + r.status);
    return r;
  });
}

const api = (path) => get(base + path).then((r) => r.json());

// Object URLs of the previews shown, released when the entries are drawn again.
let blobUrls = [];

function fromBlob(node, url) {
  get(url).then((r) => r.blob()).then((blob) => {
    const objectUrl = URL.createObjectURL(blob);
    blobUrls.push(objectUrl);
    node.src = objectUrl;
  }).catch((e) => node.replaceWith(el("p", { class: "muted" }, String(e))));
  return node;
}

function download(file) {
  const link = el("a", { href: "#" }, file.name + " (" + bytes(file.size) + ")");
  link.addEventListener("click", (event) => {
    event.preventDefault();
    get(file.url).then((r) => r.blob()).then((blob) => {
      const objectUrl = URL.createObjectURL(blob);
      const save = el("a", { href: objectUrl, download: file.name });
      save.click();
      setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
    });
  });
  return link;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function seconds(s) {
  if (s < 1) return s > 0 ? "<1 s" : "0 s";
  if (s < 120) return s.toFixed(0) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function drawThroughput(points) {
  const svg = $("throughput");
  svg.replaceChildren();
  const perMinute = new Array(60).fill(0);
  for (const p of points) perMinute[59 - p.minutes_ago] = p.objects;
  const max = Math.max(1, ...perMinute);
  perMinute.forEach((v, i) => {
    const h = (v / max) * 110;
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", i * 10 + 1);
    rect.setAttribute("y", 115 - h);
    rect.setAttribute("width", 8);
    rect.setAttribute("height", Math.max(h, v ? 1 : 0));
    rect.setAttribute("fill", "#2f6fdf");
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = v + " objects, " + (59 - i) + " min ago";
    rect.append(title);
    svg.append(rect);
  });
}

function drawBench(bench) {
  if (!bench || !bench.rows) return;
  const table = el("table", {}, el("tr", {}, el("th", {}, "tier"), el("th", {}, "op"), el("th", {}, "size"), el("th", {}, "p50 ms"), el("th", {}, "p99 ms"), el("th", {}, "")));
  const max = Math.max(...bench.rows.map((r) => r.p99_ms));
  for (const r of bench.rows) {
    const bar = el("span", { class: "hbar" });
    bar.style.width = Math.max(2, (r.p99_ms / max) * 160) + "px";
    table.append(el("tr", {}, el("td", {}, r.tier), el("td", {}, r.op), el("td", {}, bytes(r.size)),
      el("td", {}, r.p50_ms.toFixed(3)), el("td", {}, r.p99_ms.toFixed(3)), el("td", {}, bar)));
  }
  const note = el("p", { class: "muted" }, (bench.recommendation || "") + (bench.at ? " (" + bench.at + ")" : ""));
  $("bench").replaceChildren(table, note);
}

function preview(entry) {
  const file = entry.files[0];
  if (!file) {
    return el("pre", {}, JSON.stringify(entry.value, null, 2));
  }
  const type = file.content_type || "";
  if (file.size > PREVIEW_MAX) return download(file);
  if (type.startsWith("video/")) return fromBlob(el("video", { controls: "", preload: "metadata" }), file.url);
  if (type.startsWith("image/") && type !== "image/svg+xml") return fromBlob(el("img", { alt: file.name }), file.url);
  if (type.startsWith("audio/")) return fromBlob(el("audio", { controls: "", preload: "none" }), file.url);
  if (type.includes("json") || type.startsWith("text/")) {
    const pre = el("pre", {}, "…");
    get(file.url).then((r) => r.text()).then((t) => { pre.textContent = t.slice(0, 2000); });
    return pre;
  }
  return download(file);
}

// Previews are fetched whole (they need the token): larger files are offered as downloads.
const PREVIEW_MAX = 32 * 1024 * 1024;

let chosen = null;

async function showEntries(ns) {
  chosen = ns;
  for (const b of $("namespaces").querySelectorAll("button")) b.classList.toggle("active", b.dataset.key === ns.namespace + "@" + ns.version);
  const entries = await api("api/memo/" + encodeURIComponent(ns.namespace) + "?version=" + encodeURIComponent(ns.version) + "&limit=24");
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
  $("entries").replaceChildren(...entries.map((e) => el("div", { class: "entry", "data-digest": e.digest },
    el("div", { class: "inputs" }, Object.entries(e.inputs).map(([k, v]) => k + ": " + JSON.stringify(v)).join(" · ")),
    preview(e),
    el("p", { class: "muted" }, e.kind + ", " + bytes(e.size) + ", built in " + e.build_seconds.toFixed(1) + " s"))));
}

// Which mode the service is in and what this tab may do; false when it may not read.
async function showAccess() {
  const auth = await api("api/auth");
  const held = sessionStorage.getItem(TOKEN_KEY) !== null;
  if (held && auth.access === "none") {
    sessionStorage.removeItem(TOKEN_KEY);  // refused: ask again
    $("access-message").textContent = "that token was refused. " + auth.message;
  } else {
    $("access-message").textContent = auth.message + (auth.public_prefixes.length
      ? ". Public without a token: " + auth.public_prefixes.join(", ") : "");
  }
  const mode = $("mode");
  mode.textContent = auth.mode === "local" ? "local mode" : "private: token mode";
  mode.className = "mode " + auth.mode;
  mode.dataset.access = auth.access;
  $("token-form").hidden = auth.mode === "local" || auth.access !== "none";
  $("token-held").hidden = !sessionStorage.getItem(TOKEN_KEY);
  return auth.access !== "none";
}

async function refresh() {
  if (!(await showAccess())) {
    $("updated").textContent = "needs a token";
    return;
  }
  const stats = await api("api/stats");
  $("remote").textContent = stats.remote + (stats.embedded_default ? " (embedded default: not durable)" : "");
  $("pending-count").textContent = stats.pending_count;
  $("pending-bytes").textContent = bytes(stats.pending_bytes) + " not on the remote yet";
  $("loss-window").textContent = seconds(stats.loss_window);
  $("local-bytes").textContent = bytes(stats.local_bytes);
  $("local-max").textContent = "of " + bytes(stats.local_max_bytes);
  $("local-fill").style.width = Math.min(100, (100 * stats.local_bytes) / stats.local_max_bytes) + "%";
  $("synced").textContent = stats.synced_objects + " synced";
  $("remote-size").textContent = stats.remote_size
    ? stats.remote_size.objects + " objects, " + bytes(stats.remote_size.bytes) + " in all"
    : "its size is shown with a catalog (CARGOHOLD_CATALOG)";
  $("last-sync").textContent = stats.last_sync ? "last sync " + new Date(stats.last_sync).toLocaleTimeString() : "nothing synced yet";
  drawThroughput(stats.throughput);
  const refused = Object.entries(stats.refused);
  $("refused").replaceChildren(...(refused.length
    ? refused.map(([key, reason]) => el("li", { class: "error", "data-key": key }, el("code", {}, key), " " + reason))
    : [el("li", { class: "muted" }, "none")]));
  $("errors").replaceChildren(...(stats.errors.length
    ? stats.errors.map((e) => el("li", { class: "error" }, new Date(e.at).toLocaleTimeString() + " " + e.message))
    : [el("li", { class: "muted" }, "none")]));
  drawBench(stats.bench);
  const namespaces = await api("api/memo");
  if (namespaces.length) {
    $("namespaces").replaceChildren(...namespaces.map((ns) => {
      const b = el("button", { type: "button", "data-key": ns.namespace + "@" + ns.version }, ns.namespace + " " + ns.version + " (" + ns.entries + ")");
      b.addEventListener("click", () => showEntries(ns));
      return b;
    }));
    if (!chosen) await showEntries(namespaces[0]);
  }
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  chosen = null;
  refresh().catch((e) => { $("updated").textContent = String(e); });
});
$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  refresh().catch((e) => { $("updated").textContent = String(e); });
});

refresh().catch((e) => { $("updated").textContent = String(e); });
setInterval(() => refresh().catch((e) => { $("updated").textContent = String(e); }), 5000);
