// SnapShoe's progressive scripts: the pages work without them (forms post, pages reload);
// with them, countdowns tick, pairs left and the queue update live, the console draws its
// chart. No inline script anywhere (the Content-Security-Policy allows only this file).
"use strict";

function countdowns() {
  const nodes = document.querySelectorAll("[data-countdown]");
  if (!nodes.length) return;
  const tick = () => {
    const now = Date.now();
    nodes.forEach((n) => {
      const at = Date.parse(n.dataset.countdown);
      if (Number.isNaN(at)) return;
      let s = Math.max(0, Math.round((at - now) / 1000));
      if (s === 0) { n.textContent = n.dataset.done || ""; return; }
      const d = Math.floor(s / 86400); s %= 86400;
      const h = Math.floor(s / 3600); s %= 3600;
      const m = Math.floor(s / 60); s %= 60;
      const pad = (x) => String(x).padStart(2, "0");
      const text = (d ? d + "d " : "") + pad(h) + ":" + pad(m) + ":" + pad(s);
      n.textContent = (n.dataset.label ? n.dataset.label + " " : "") + text;
    });
  };
  tick();
  setInterval(tick, 1000);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(String(r.status));
  return r.json();
}

function liveStock() {
  const root = document.querySelector("[data-stock-url]");
  if (!root) return;
  const poll = async () => {
    try {
      const data = await getJSON(root.dataset.stockUrl);
      data.items.forEach((i) => {
        const cell = root.querySelector('.left[data-item="' + i.id + '"]');
        if (cell && cell.textContent !== String(i.left)) cell.textContent = String(i.left);
        const radio = root.querySelector('input[type=radio][value="' + i.id + '"]');
        if (radio) radio.disabled = i.left === 0;
      });
    } catch (e) { /* the next poll tries again */ }
  };
  setInterval(poll, 2000);
}

function showTicket(box, ticket) {
  const word = document.getElementById("word-" + ticket.state);
  // A <template>'s text lives in its content fragment, not in the element itself.
  if (word) document.getElementById("ticket-state").textContent = word.content.textContent;
  box.dataset.state = ticket.state;
  const line = document.getElementById("ticket-position-line");
  if (ticket.position !== null && ticket.position !== undefined && ticket.state === "waiting") {
    document.getElementById("ticket-position").textContent = String(ticket.position);
    line.hidden = false;
  } else {
    line.hidden = true;
  }
  const buy = document.getElementById("admitted-buy");
  if (ticket.state === "admitted") {
    buy.hidden = false;
    const left = document.getElementById("admission-left");
    if (ticket.admitted_until) left.dataset.countdown = ticket.admitted_until;
  } else {
    buy.hidden = true;
  }
}

function liveTicket() {
  const box = document.getElementById("ticket");
  if (!box) return;
  const final = ["used", "expired", "sold_out"];
  if (final.includes(box.dataset.state)) return;
  const poll = async () => {
    try { showTicket(box, await getJSON(box.dataset.poll)); } catch (e) { /* retry */ }
    if (!final.includes(box.dataset.state)) setTimeout(poll, 5000);
  };
  if (!window.EventSource) { poll(); return; }
  const source = new EventSource(box.dataset.events);
  source.addEventListener("ticket", (ev) => {
    const ticket = JSON.parse(ev.data);
    showTicket(box, ticket);
    if (final.includes(ticket.state)) source.close();
  });
  source.addEventListener("gone", () => { source.close(); poll(); });
}

function chart(svg, series) {
  const w = 600, h = 200, pad = 4;
  const all = series.flatMap((s) => s.points.map((p) => p[1]));
  const max = Math.max(1, ...all);
  const t0 = Math.min(...series.flatMap((s) => s.points.map((p) => p[0])));
  const t1 = Math.max(t0 + 1, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const colours = ["#0b57d0", "#b3261e", "#1e6b35", "#8a4b00", "#6b2fa3", "#00696b"];
  svg.replaceChildren();
  series.forEach((s, k) => {
    const pts = s.points.map(([t, v]) => {
      const x = pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
      const y = h - pad - (v / max) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colours[k % colours.length]);
    line.setAttribute("stroke-width", "2");
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = s.name;
    line.appendChild(title);
    svg.appendChild(line);
  });
}

function liveSales(root, sales) {
  const put = (id, v) => { const el = document.getElementById(id); if (el) el.textContent = String(v); };
  put("live-orders", Object.values(sales.orders_by_status).reduce((a, b) => a + b, 0));
  put("live-orders-rate", (sales.created_last_10s / 10).toFixed(1));
  put("live-approved", sales.payments.approved);
  put("live-declined", sales.payments.declined);
  put("live-5xx", sales.server_errors);
  root.querySelectorAll("[data-refusal]").forEach((dd) => {
    const v = sales.refusals[dd.dataset.refusal];
    dd.textContent = v === undefined ? "–" : String(v);
  });
}

function liveDrop() {
  const root = document.getElementById("live");
  if (!root) return;
  const history = new Map();
  let last = null;
  const poll = async () => {
    let data;
    try { data = await getJSON(root.dataset.live); } catch (e) { return; }
    const now = Date.now() / 1000;
    let leftNow = 0, initial = 0;
    data.sizes.forEach((s) => {
      const cell = root.querySelector('.left[data-item="' + s.id + '"]');
      if (cell) { cell.textContent = String(s.left); initial += Number(cell.dataset.initial || s.left); }
      leftNow += s.left;
      const key = s.size + " " + s.color;
      if (!history.has(key)) history.set(key, []);
      const pts = history.get(key);
      pts.push([now, s.left]);
      if (pts.length > 600) pts.shift();
    });
    const status = document.getElementById("live-status");
    status.textContent = status.getAttribute("data-word-" + data.status) || data.status;
    document.getElementById("live-updated").textContent = new Date().toLocaleTimeString();
    const sold = Math.max(0, initial - leftNow);
    document.getElementById("live-sold").textContent = String(sold);
    if (last) {
      const rate = (sold - last.sold) / Math.max(0.001, now - last.at);
      document.getElementById("live-rate").textContent = rate.toFixed(1);
    }
    last = { at: now, sold };
    chart(document.getElementById("live-chart"),
      [...history.entries()].map(([name, points]) => ({ name, points })));
    if (data.queue) {
      root.querySelectorAll("[data-fig]").forEach((dd) => {
        const v = data.queue[dd.dataset.fig];
        dd.textContent = v === undefined ? "–" : String(v);
      });
    }
    const draw = document.getElementById("live-draw");
    if (draw && data.draw) draw.textContent = JSON.stringify(data.draw, null, 2);
    if (data.sales) liveSales(root, data.sales);
  };
  poll();
  setInterval(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  countdowns();
  liveStock();
  liveTicket();
  liveDrop();
});
