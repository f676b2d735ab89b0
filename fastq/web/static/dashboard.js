// The fastq dashboard: reads the server-sent snapshot stream (/api/stream) and redraws.
// fetch() rather than EventSource, so that a bearer token can be sent as a header.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = localStorage.getItem("fastq-token") || "";
$("#token").value = token;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else if (typeof c === "number") tr.appendChild(el("td", c, "num"));
    else tr.appendChild(el("td", c));
  }
  return tr;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function setStatus(text, ok) {
  const s = $("#status");
  s.textContent = text;
  s.className = "status " + (ok ? "ok" : "bad");
}

function renderQueues(queues) {
  fill($("#queues tbody"), queues.map((q) => {
    const levels = q.levels.map((l) => {
      const cell = el("span", l.depth ? `${l.depth} (${l.pending})` : "·");
      if (l.depth) cell.title = `oldest ${l.oldest_age_s.toFixed(1)} s; in ${l.in_per_s}/s, out ${l.out_per_s}/s`;
      cell.dataset.priority = l.priority;
      return cell;
    });
    const sum = (key) => Math.round(q.levels.reduce((acc, l) => acc + l[key], 0) * 100) / 100;
    const tr = row([q.queue, ...levels, sum("in_per_s"), sum("out_per_s"), q.dead_letters]);
    tr.dataset.queue = q.queue;
    return tr;
  }));
}

function renderWorkers(workers, others) {
  const box = $("#workers");
  const parts = [];
  for (const w of workers) {
    const div = el("div", null, "worker");
    const busy = w.children.filter((c) => c.busy).length;
    div.appendChild(el("strong", w.worker));
    div.appendChild(el("span", ` pid ${w.pid} on ${w.host}: ${busy} of ${w.children.length} children busy`));
    const ul = el("ul");
    for (const c of w.children) {
      const counts = c.beat ? ` processed ${c.beat.processed}, failed ${c.beat.failed}` : "";
      const doing = c.busy ? `busy ${c.busy_s.toFixed(1)} s with ${c.task_id}` : "idle";
      ul.appendChild(el("li", `${c.consumer}: ${doing}${counts}`, c.busy ? "busy" : "idle"));
    }
    div.appendChild(ul);
    parts.push(div);
  }
  for (const o of others) parts.push(el("div", `${o.consumer} (no supervisor) processed ${o.processed}`, "worker"));
  if (!parts.length) parts.push(el("p", "no live workers"));
  box.replaceChildren(...parts);
}

function renderRecent(recent) {
  fill($("#recent tbody"), recent.map((t) => {
    const result = el("div", t.result);
    if (t.traceback) result.appendChild(el("pre", t.traceback));
    const tr = row([t.id, t.name, t.queue, el("span", t.state, "state state-" + t.state), result]);
    tr.dataset.id = t.id;
    return tr;
  }));
}

function renderDead(letters, total) {
  $("#dlq-total").textContent = `(${total})`;
  fill($("#dlq tbody"), letters.map((d) => {
    const reason = el("div", d.reason);
    if (d.traceback) reason.appendChild(el("pre", d.traceback));
    const button = el("button", "requeue", "requeue");
    button.disabled = !d.requeueable;
    button.title = d.requeueable ? "send it again, unchanged" : "undecodable: purge it instead";
    button.addEventListener("click", () => requeue(d.queue, d.dlq_entry_id, button));
    const tr = row([d.dlq_entry_id, d.queue, d.task || "-", reason, d.attempts, button]);
    tr.dataset.entry = d.dlq_entry_id; tr.dataset.taskId = d.task_id;
    return tr;
  }));
}

function renderWorkflows(ids) {
  const items = ids.map((id) => el("li", id));
  if (!items.length) items.push(el("li", "none running"));
  $("#workflows").replaceChildren(...items);
}

function renderChart(points) {
  const canvas = $("#chart"), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 20;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points.map((p) => Math.max(p.in_per_s, p.out_per_s)));
  ctx.fillStyle = "#6b7280"; ctx.font = "11px sans-serif";
  ctx.fillText(max.toFixed(0) + "/s", 2, 12); ctx.fillText("0", 2, h - 4);
  const line = (key, color) => {
    ctx.strokeStyle = color; ctx.beginPath();
    points.forEach((p, i) => {
      const x = pad + (w - pad - 4) * (points.length > 1 ? i / (points.length - 1) : 1);
      const y = h - 4 - (h - 20) * (p[key] / max);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line("in_per_s", "#2563eb"); line("out_per_s", "#16a34a");
  ctx.fillStyle = "#2563eb"; ctx.fillText("in", w - 60, 12);
  ctx.fillStyle = "#16a34a"; ctx.fillText("out", w - 35, 12);
}

function render(snap) {
  if (snap.error) setStatus(snap.error, false);
  else setStatus("live, " + new Date(snap.at * 1000).toLocaleTimeString(), true);
  renderQueues(snap.queues);
  renderWorkers(snap.workers, snap.other_consumers);
  renderRecent(snap.recent);
  renderDead(snap.dead_letters, snap.dead_letter_total);
  renderWorkflows(snap.workflows);
  renderChart(snap.throughput);
}

async function requeue(queue, entry, button) {
  button.disabled = true;
  const resp = await fetch("/api/dlq/requeue", {
    method: "POST", headers: headers({"Content-Type": "application/json"}),
    body: JSON.stringify({ids: [entry], queue: queue}),
  });
  const body = await resp.json().catch(() => ({}));
  if (resp.ok) $("#message").textContent = `requeued ${body.requeued.length} dead letter(s)`;
  else { $("#message").textContent = `requeue refused (${resp.status}): ${body.detail}`; button.disabled = false; }
}

let controller = null;
async function listen() {
  if (controller) controller.abort();
  controller = new AbortController();
  const mine = controller;
  try {
    const resp = await fetch("/api/stream", {headers: headers(), signal: mine.signal});
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      setStatus(`stream refused (${resp.status}): ${body.detail || ""}`, false);
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) render(JSON.parse(data));
      }
    }
  } catch (err) {
    if (mine.signal.aborted) return;
    setStatus("disconnected: " + err, false);
  }
  if (!mine.signal.aborted) setTimeout(listen, 2000);
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  localStorage.setItem("fastq-token", token);
  $("#message").textContent = token ? "token set" : "token cleared";
  listen();
});

listen();
