// stenod's page: uploads each file as a job (POST /v1/jobs), follows it by polling, shows the
// transcript with click-to-play segments, search, copy and downloads. No framework and no build
// step: the server is often offline, so everything it needs is served by the app itself.
// Server data is only ever put into the page with textContent (never innerHTML).
"use strict";

const KEY_STORE = "stenod.apiKey";       // sessionStorage: gone when the tab closes, never in a URL
const NAME_STORE = "stenod.jobNames";    // sessionStorage: job id -> the file name it was made from
const POLL_MS = 1000;
const FINAL = new Set(["completed", "failed", "cancelled"]);
const EXT = { text: "txt", srt: "srt", vtt: "vtt", verbose_json: "json" };

const $ = (sel) => document.querySelector(sel);
const localFiles = new Map();            // job id -> File (for playback of this tab's uploads)
const cards = new Map();                 // job id -> card elements
let viewing = null;                      // { id, name, segments, text }

// -- API access ---------------------------------------------------------------------------------

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }
function authHeaders() { const key = apiKey(); return key ? { Authorization: `Bearer ${key}` } : {}; }

function explain(status, message, retryAfter) {
  // The API's error shape carries a message; say in words what the status means for this person.
  const prefix = {
    400: "Rejected", 401: "API key missing or wrong (enter it at the top)", 403: "Not allowed",
    404: "Not found", 408: "Took too long", 409: "Not ready yet", 413: "File too large",
    415: "Not an audio file this server can read", 422: "Rejected",
    429: `Server busy${retryAfter ? `, try again in ${retryAfter} s` : ""}`,
    503: "Server unavailable (starting or shutting down)",
  }[status] || `Error ${status}`;
  return message ? `${prefix}: ${message}` : prefix;
}

function errorFromBody(status, text, retryAfter) {
  let message = "";
  try { message = JSON.parse(text).error.message || ""; } catch (_) { message = ""; }
  const err = new Error(explain(status, message, retryAfter));
  err.status = status;
  return err;
}

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (_) {
    throw new Error("Cannot reach the server");
  }
  if (!res.ok) throw errorFromBody(res.status, await res.text(), res.headers.get("Retry-After"));
  return res;
}

function uploadJob(file, fields, onProgress) {
  // XMLHttpRequest rather than fetch: only it reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else reject(errorFromBody(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => reject(new Error("Upload failed: connection lost"));
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [name, value] of fields) form.append(name, value);
    xhr.send(form);
  });
}

// -- small helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function clock(seconds) {
  const s = Math.max(0, seconds || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = (s % 60).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function when(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "number" ? new Date(value * 1000) : new Date(value);
}

function jobNames() { try { return JSON.parse(sessionStorage.getItem(NAME_STORE) || "{}"); } catch (_) { return {}; } }
function rememberName(id, name) { const names = jobNames(); names[id] = name; sessionStorage.setItem(NAME_STORE, JSON.stringify(names)); }
function nameOf(job) { return jobNames()[job.id] || job.filename || job.id; }

// -- API key ------------------------------------------------------------------------------------

function showKeyState() {
  $("#key-state").textContent = apiKey() ? "key set for this tab" : "";
  $("#api-key").value = "";
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key);
  showKeyState();
  loadModels();
  refreshJobs();
});
$("#key-clear").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); showKeyState(); });

// -- uploads and live job cards ------------------------------------------------------------------

function formFields() {
  const fields = [["model", $("#model").value], ["task", $("#task").value], ["timestamp_granularities[]", "segment"]];
  if ($("#language").value) fields.push(["language", $("#language").value]);
  if ($("#words").checked) fields.push(["timestamp_granularities[]", "word"]);
  if ($("#diarize").checked) fields.push(["diarize", "true"]);
  return fields;
}

function newCard(file) {
  const status = el("span", { class: "status" }, "uploading");
  const bar = el("progress", { max: "1", value: "0", "aria-label": `progress of ${file.name}` });
  const error = el("p", { class: "error", role: "alert", hidden: "" });
  const actions = el("span", { class: "actions" });
  const li = el("li", { "data-file": file.name },
    el("div", { class: "row" }, el("span", { class: "name" }, file.name), status, actions), bar, error);
  $("#uploads").prepend(li);
  return { li, status, bar, error, actions, name: file.name };
}

function setActions(card, job) {
  card.actions.replaceChildren();
  if (job.status === "completed") {
    card.actions.append(el("button", { type: "button", class: "small", onclick: () => openTranscript(job.id) }, "Open transcript"));
  }
  if (job.status === "queued" || job.status === "processing") {
    card.actions.append(el("button", { type: "button", class: "small", onclick: () => cancelJob(job.id) }, "Cancel"));
  }
  card.actions.append(el("button", { type: "button", class: "small", onclick: () => deleteJob(job.id) }, "Delete"));
}

function showJob(card, job) {
  card.li.dataset.status = job.status;
  card.status.className = `status state-${job.status}`;
  const pct = Math.round((job.progress || 0) * 100);
  card.status.textContent = job.status === "processing" ? `processing ${pct}%` : job.status;
  card.bar.value = job.status === "completed" ? 1 : job.progress || 0;
  if (job.status === "failed") {
    card.error.hidden = false;
    card.error.textContent = `Failed: ${job.error && job.error.message ? job.error.message : job.error || "unknown reason"}`;
  }
  setActions(card, job);
}

function showUploadError(card, err) {
  card.li.dataset.status = "error";
  card.status.className = "status state-error";
  card.status.textContent = "not accepted";
  card.bar.hidden = true;
  card.error.hidden = false;
  card.error.textContent = err.message;
}

async function startUploads(files) {
  const fields = formFields();
  let firstDone = null;
  await Promise.all([...files].map(async (file) => {
    const card = newCard(file);
    try {
      const job = await uploadJob(file, fields, (f) => { card.bar.value = f; card.status.textContent = `uploading ${Math.round(f * 100)}%`; });
      localFiles.set(job.id, file);
      rememberName(job.id, file.name);
      cards.set(job.id, card);
      card.li.dataset.job = job.id;
      showJob(card, job);
      const done = await follow(job.id, card);
      if (done.status === "completed" && !firstDone) { firstDone = done; if (!viewing) openTranscript(done.id); }
    } catch (err) {
      showUploadError(card, err);
    }
  }));
  refreshJobs();
}

async function follow(id, card) {
  // Poll until the job reaches a final state; a transient error only delays the next poll.
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    let job;
    try { job = await (await api(`/v1/jobs/${encodeURIComponent(id)}`)).json(); }
    catch (err) {
      if (err.status === 404) { card.status.textContent = "deleted"; return { id, status: "deleted" }; }
      continue;
    }
    showJob(card, job);
    if (FINAL.has(job.status)) { refreshJobs(); return job; }
  }
}

async function cancelJob(id) {
  try { await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }); }
  catch (err) { reportJobError(id, err); }
  refreshJobs();
}

async function deleteJob(id) {
  try {
    await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
    const card = cards.get(id);
    if (card) { card.li.remove(); cards.delete(id); }
    if (viewing && viewing.id === id) closeViewer();
  } catch (err) { reportJobError(id, err); }
  refreshJobs();
}

function reportJobError(id, err) {
  const card = cards.get(id);
  if (card) { card.error.hidden = false; card.error.textContent = err.message; }
  else { $("#jobs-error").hidden = false; $("#jobs-error").textContent = err.message; }
}

$("#upload-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const files = $("#files").files;
  if (!files.length) { $("#files").focus(); return; }
  startUploads(files);
  $("#files").value = "";
});

const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer && e.dataTransfer.files.length) startUploads(e.dataTransfer.files);
});

// -- transcript viewer ---------------------------------------------------------------------------

function closeViewer() {
  viewing = null;
  $("#viewer").hidden = true;
  const player = $("#player");
  player.pause();
  player.removeAttribute("src");
}

async function openTranscript(id) {
  let result;
  try { result = await (await api(`/v1/jobs/${encodeURIComponent(id)}/result?response_format=verbose_json`)).json(); }
  catch (err) { reportJobError(id, err); return; }
  const name = jobNames()[id] || id;
  viewing = { id, name, segments: result.segments || [], text: result.text || "" };
  $("#view-name").textContent = `${name}${result.language ? ` (${result.language})` : ""}`;
  const player = $("#player");
  const file = localFiles.get(id);
  if (player.src) URL.revokeObjectURL(player.src);
  if (file) { player.src = URL.createObjectURL(file); player.hidden = false; $("#no-audio").hidden = true; }
  else { player.removeAttribute("src"); player.hidden = true; $("#no-audio").hidden = false; }
  renderSegments();
  $("#search").value = "";
  $("#search-count").textContent = "";
  $("#viewer").hidden = false;
  $("#view-h").scrollIntoView({ block: "nearest" });
}

function renderSegments(query = "") {
  const list = $("#segments");
  list.replaceChildren();
  let hits = 0;
  const needle = query.toLowerCase();
  viewing.segments.forEach((seg, i) => {
    const text = el("span", { class: "x" });
    if (seg.speaker) text.append(el("span", { class: "spk" }, `${seg.speaker}:`));
    const body = (seg.text || "").trim();
    if (needle) {
      // Highlight every match with <mark>, built from text nodes (no HTML from the server).
      let at = 0, lower = body.toLowerCase(), found;
      while ((found = lower.indexOf(needle, at)) !== -1) {
        text.append(body.slice(at, found), el("mark", {}, body.slice(found, found + needle.length)));
        at = found + needle.length;
        hits += 1;
      }
      text.append(body.slice(at));
    } else {
      text.append(body);
    }
    const button = el("button", { type: "button", "data-start": String(seg.start), onclick: () => playFrom(seg.start) },
      el("span", { class: "t" }, `${clock(seg.start)} – ${clock(seg.end)}`), text);
    list.append(el("li", { "data-index": String(i) }, button));
  });
  return hits;
}

function playFrom(seconds) {
  const player = $("#player");
  if (!player.src) return;
  player.currentTime = seconds;
  player.play().catch(() => {});
}

$("#player").addEventListener("timeupdate", () => {
  if (!viewing) return;
  const t = $("#player").currentTime;
  const items = $("#segments").children;
  viewing.segments.forEach((seg, i) => {
    const now = t >= seg.start && t < seg.end;
    const item = items[i];
    if (!item) return;
    if (now && !item.classList.contains("current")) item.scrollIntoView({ block: "nearest" });
    item.classList.toggle("current", now);
    if (now) item.setAttribute("aria-current", "true"); else item.removeAttribute("aria-current");
  });
});

$("#search").addEventListener("input", () => {
  if (!viewing) return;
  const query = $("#search").value.trim();
  const hits = renderSegments(query);
  $("#search-count").textContent = query ? `${hits} match${hits === 1 ? "" : "es"}` : "";
  const first = $("#segments mark");
  if (first) first.scrollIntoView({ block: "nearest" });
});

$("#copy").addEventListener("click", async () => {
  if (!viewing) return;
  const text = viewing.text.trim();
  try { await navigator.clipboard.writeText(text); }
  catch (_) {
    // Clipboard API needs a secure context; plain http on a LAN address falls back to a selection.
    const area = el("textarea", {}, text);
    document.body.append(area); area.select(); document.execCommand("copy"); area.remove();
  }
  $("#search-count").textContent = "copied";
});

for (const button of document.querySelectorAll(".downloads button")) {
  button.addEventListener("click", async () => {
    if (!viewing) return;
    const format = button.dataset.format;
    try {
      const res = await api(`/v1/jobs/${encodeURIComponent(viewing.id)}/result?response_format=${format}`);
      const blob = await res.blob();
      const stem = viewing.name.replace(/\.[^.]+$/, "") || viewing.id;
      const link = el("a", { href: URL.createObjectURL(blob), download: `${stem}.${EXT[format]}` });
      document.body.append(link); link.click(); link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (err) { reportJobError(viewing.id, err); }
  });
}

// -- recent jobs and models ------------------------------------------------------------------------

async function refreshJobs() {
  const body = $("#jobs tbody");
  let list;
  try { list = await (await api("/v1/jobs?limit=20")).json(); $("#jobs-error").hidden = true; }
  catch (err) { $("#jobs-error").hidden = false; $("#jobs-error").textContent = err.message; return; }
  body.replaceChildren();
  for (const job of list.data) {
    const started = when(job.started_at), completed = when(job.completed_at), created = when(job.created_at);
    const secs = started && completed ? (completed - started) / 1000 : null;
    // Job times are whole seconds (OpenAI's style): under a second of work says "more than".
    let speed = "";
    if (secs !== null && job.duration) speed = secs >= 1 ? `${(job.duration / secs).toFixed(1)}x` : `>${Math.floor(job.duration)}x`;
    const actions = el("td");
    if (job.status === "completed") actions.append(el("button", { type: "button", class: "small", onclick: () => openTranscript(job.id) }, "Open"));
    if (!FINAL.has(job.status)) actions.append(el("button", { type: "button", class: "small", onclick: () => cancelJob(job.id) }, "Cancel"));
    actions.append(el("button", { type: "button", class: "small", onclick: () => deleteJob(job.id) }, "Delete"));
    const status = job.status === "processing" ? `processing ${Math.round((job.progress || 0) * 100)}%` : job.status;
    body.append(el("tr", { "data-job": job.id },
      el("td", { class: "file" }, nameOf(job)), el("td", { class: `state-${job.status}` }, status),
      el("td", {}, job.duration ? clock(job.duration) : ""), el("td", {}, speed), el("td", {}, job.model || ""),
      el("td", {}, created ? created.toLocaleString() : ""), actions));
  }
}

async function loadModels() {
  try {
    const list = await (await api("/v1/models")).json();
    const select = $("#model");
    const current = select.value;
    select.replaceChildren(el("option", { value: "whisper-1" }, "default"));
    for (const model of list.data) if (model.id !== "whisper-1") select.append(el("option", { value: model.id }, model.id));
    select.value = current;
    if (!select.value) select.value = "whisper-1";
  } catch (_) { /* the default stays selectable; errors show on upload */ }
}

$("#refresh").addEventListener("click", refreshJobs);
showKeyState();
loadModels();
refreshJobs();
