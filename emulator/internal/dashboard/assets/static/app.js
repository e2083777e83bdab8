// iotc-emulator dashboard: hand-written, no dependencies. Every list it
// grows is capped so a busy device cannot make the page grow without bound.
"use strict";
(function () {
  const MAX_RAW = 20, MAX_EVENTS = 50, MAX_POINTS = 600, WINDOW_MS = 120000;
  const $ = (s, el) => (el || document).querySelector(s);
  const page = document.body.dataset.page;

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-IOTC-Dashboard": "1" },
      body: JSON.stringify(body),
    }).then(async (r) => {
      let data = null;
      try { data = await r.json(); } catch (e) { data = { error: r.status + " " + r.statusText }; }
      if (!r.ok && !data.error) data.error = r.status + " " + r.statusText;
      return data;
    });
  }
  function pill(connected) {
    const s = document.createElement("span");
    s.className = "pill " + (connected ? "on" : "off");
    s.textContent = connected ? "connected" : "disconnected";
    return s;
  }
  function li(cls, time, text) {
    const el = document.createElement("li");
    if (cls) el.className = cls;
    const t = document.createElement("time");
    t.textContent = time;
    el.append(t, " ", text);
    return el;
  }
  function prependCapped(list, el, max) {
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    list.prepend(el);
    while (list.children.length > max) list.lastElementChild.remove();
  }

  // Logout goes through fetch with the dashboard header, so that it is
  // checked like every other state-changing request; the form stays as
  // the fallback (accepted from the same origin).
  const logout = $("form.logout");
  if (logout) {
    logout.addEventListener("submit", (ev) => {
      ev.preventDefault();
      fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-IOTC-Dashboard": "1" } })
        .finally(() => { location.href = "/login"; });
    });
  }

  // Login: a token in the URL fragment (#token=...) logs in at once; the
  // fragment never reaches the server and is removed from the address bar.
  if (page === "login") {
    const m = /^#token=(.+)$/.exec(location.hash);
    if (m) {
      history.replaceState(null, "", location.pathname + location.search);
      if (!$("#login-error")) {
        $("#token").value = decodeURIComponent(m[1]);
        $("#login-form").submit();
      }
    }
  }

  if (page === "devices") {
    const tbody = $("#devices tbody");
    const filter = $("#filter");
    const applyFilter = (row) => {
      const q = filter.value.trim().toLowerCase();
      row.hidden = q !== "" && !row.textContent.toLowerCase().includes(q);
    };
    filter.addEventListener("input", () => tbody.querySelectorAll("tr[data-id]").forEach(applyFilter));
    const es = new EventSource("/live");
    es.addEventListener("devices", (e) => {
      const d = JSON.parse(e.data);
      $("#online").textContent = d.online;
      $("#total").textContent = d.total;
      for (const r of d.rows) {
        let row = document.getElementById("dev-" + r.id);
        if (!row) {
          const empty = tbody.querySelector(".empty");
          if (empty) empty.remove();
          row = document.createElement("tr");
          row.id = "dev-" + r.id;
          row.dataset.id = r.id;
          for (const c of ["id", "model", "prov", "conn", "seen", "num msgs"]) {
            const td = document.createElement("td");
            td.className = c;
            row.append(td);
          }
          const a = document.createElement("a");
          a.href = "/devices/" + encodeURIComponent(r.id);
          a.textContent = r.id;
          row.children[0].append(a);
          tbody.append(row);
        }
        row.querySelector(".model").textContent = r.model;
        row.querySelector(".prov").textContent = r.provisioned ? "yes" : "no";
        row.querySelector(".conn").replaceChildren(pill(r.connected));
        row.querySelector(".seen").textContent = r.lastSeen;
        row.querySelector(".msgs").textContent = r.messages;
        applyFilter(row);
      }
    });
  }

  if (page === "groups") {
    document.querySelectorAll(".show-keys").forEach((b) => b.addEventListener("click", async () => {
      const dl = b.nextElementSibling;
      if (!dl.hidden) { dl.hidden = true; b.textContent = "Show keys"; return; }
      const r = await fetch("/groups/" + encodeURIComponent(b.dataset.group) + "/keys", { credentials: "same-origin" });
      if (!r.ok) { b.textContent = "Keys unavailable (" + r.status + ")"; return; }
      const k = await r.json();
      $(".primary", dl).textContent = k.primaryKey;
      $(".secondary", dl).textContent = k.secondaryKey;
      dl.hidden = false;
      b.textContent = "Hide keys";
    }));
  }

  if (page === "device") {
    const id = document.body.dataset.device;
    const base = "/devices/" + encodeURIComponent(id);
    const charts = new Map(); // field -> {canvas, label, pts: [[t, v]]}
    const box = $("#charts");
    let dirty = false;

    function chartFor(name) {
      let c = charts.get(name);
      if (c) return c;
      const noCharts = $("#no-charts");
      if (noCharts) noCharts.remove();
      const fig = document.createElement("figure");
      fig.className = "chart";
      fig.dataset.field = name;
      const cap = document.createElement("figcaption");
      const title = document.createElement("strong");
      title.textContent = name;
      const label = document.createElement("span");
      label.className = "last";
      cap.append(title, " ", label);
      const canvas = document.createElement("canvas");
      canvas.width = 560; canvas.height = 140;
      fig.append(cap, canvas);
      box.append(fig);
      c = { canvas, label, pts: [] };
      charts.set(name, c);
      return c;
    }
    function addPoint(msg) {
      if (!msg.f) return;
      const t = Date.parse(msg.t);
      for (const [name, v] of Object.entries(msg.f)) {
        const c = chartFor(name);
        c.pts.push([t, v]);
        if (c.pts.length > MAX_POINTS) c.pts.splice(0, c.pts.length - MAX_POINTS);
        c.label.textContent = String(v);
      }
      if (!dirty) { dirty = true; requestAnimationFrame(draw); }
    }
    function draw() {
      dirty = false;
      const now = Date.now();
      for (const c of charts.values()) {
        const g = c.canvas.getContext("2d"), W = c.canvas.width, H = c.canvas.height, P = 24;
        const pts = c.pts.filter((p) => p[0] >= now - WINDOW_MS);
        const last = c.pts[c.pts.length - 1];
        const end = Math.max(now, last ? last[0] : now);
        // The axis spans the data (at least 10 s, at most WINDOW_MS), so a
        // device that just started still draws a readable line.
        const span = Math.min(WINDOW_MS, Math.max(10000, end - (pts.length ? pts[0][0] : end)));
        const start = end - span;
        g.clearRect(0, 0, W, H);
        g.strokeStyle = "#d0d7de"; g.lineWidth = 1;
        g.strokeRect(P + 0.5, 4.5, W - P - 5, H - P - 4);
        const vals = (pts.length ? pts : c.pts.slice(-1)).map((p) => p[1]);
        let lo = Math.min(...vals), hi = Math.max(...vals);
        if (lo === hi) { lo -= 1; hi += 1; }
        g.fillStyle = "#57606a"; g.font = "10px sans-serif";
        g.fillText(String(+hi.toPrecision(4)), 2, 12);
        g.fillText(String(+lo.toPrecision(4)), 2, H - P);
        g.fillText("-" + Math.round(span / 1000) + " s", P + 2, H - 8);
        g.fillText("now", W - 24, H - 8);
        const x = (t) => P + (W - P - 5) * (t - start) / span;
        const y = (v) => 4 + (H - P - 4) * (1 - (v - lo) / (hi - lo));
        g.strokeStyle = "#0969da"; g.lineWidth = 2; g.beginPath();
        pts.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
        g.stroke();
        g.fillStyle = "#0969da";
        for (const p of pts.slice(-1)) { g.beginPath(); g.arc(x(p[0]), y(p[1]), 3, 0, 7); g.fill(); }
      }
    }
    try { JSON.parse(box.dataset.init || "[]").forEach(addPoint); } catch (e) { /* no history */ }
    setInterval(() => { if (charts.size && !dirty) { dirty = true; requestAnimationFrame(draw); } }, 1000);

    let propsTimer = null;
    function refreshProps() {
      if (propsTimer) return;
      propsTimer = setTimeout(async () => {
        propsTimer = null;
        const r = await fetch(base + "/properties", { credentials: "same-origin" });
        if (r.ok) {
          const tpl = document.createElement("template");
          tpl.innerHTML = await r.text();
          $("#props").replaceWith(tpl.content.firstElementChild);
        }
      }, 150);
    }
    $("#properties").addEventListener("click", (e) => {
      const b = e.target.closest("button.edit");
      if (!b) return;
      const f = $("#write-form");
      f.component.value = b.dataset.component;
      f.name.value = b.dataset.name;
      f.value.value = b.dataset.value;
      f.value.focus();
    });

    let count = 0, since = Date.now();
    const raw = $("#raw"), events = $("#event-list");
    const es = new EventSource(base + "/live");
    es.addEventListener("telemetry", (e) => {
      const m = JSON.parse(e.data);
      addPoint(m);
      const code = document.createElement("code");
      code.textContent = m.b;
      const el = li("", m.t, code);
      if (m.c) { const s = document.createElement("span"); s.className = "comp"; s.textContent = m.c; el.insertBefore(s, code); el.insertBefore(document.createTextNode(" "), code); }
      prependCapped(raw, el, MAX_RAW);
      count++;
      const dt = (Date.now() - since) / 1000;
      if (dt >= 2) { $("#rate").textContent = (count / dt).toFixed(1) + " msg/s"; count = 0; since = Date.now(); }
    });
    es.addEventListener("event", (e) => {
      const ev = JSON.parse(e.data);
      prependCapped(events, li(ev.kind, ev.t, ev.text), MAX_EVENTS);
      if (ev.kind === "desired" || ev.kind === "reported") refreshProps();
    });
    es.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      $("#conn").replaceChildren(pill(s.connected));
      $("#seen").textContent = s.lastSeen;
      $("#msgs").textContent = s.messages;
    });

    $("#write-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target, out = $("#write-result");
      let value;
      try { value = JSON.parse(f.value.value); } catch (err) { out.textContent = "The value is not JSON (a string needs quotes)."; out.className = "error"; return; }
      out.textContent = "sending…"; out.className = "";
      const r = await post(base + "/properties", { component: f.component.value.trim(), name: f.name.value.trim(), value });
      out.textContent = r.error || r.result;
      out.className = r.error ? "error" : "ok";
      refreshProps();
    });
    $("#command-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target, res = $("#command-result");
      $("#command-status").textContent = "waiting for the device…";
      $("#command-body").textContent = "";
      res.hidden = false; res.className = "result";
      const r = await post(base + "/commands", {
        component: f.component.value.trim(), name: f.name.value.trim(), payload: f.payload.value,
        timeout: parseInt(f.timeout.value || "0", 10), queue: f.queue.checked,
      });
      if (r.error) { $("#command-status").textContent = "error"; $("#command-body").textContent = r.error; res.className = "result error"; return; }
      if (r.queued) { $("#command-status").textContent = "queued"; $("#command-body").textContent = "The device gets it as a cloud-to-device message when it next connects."; return; }
      $("#command-status").textContent = r.status;
      $("#command-body").textContent = JSON.stringify(r.body, null, 2);
      res.className = "result " + (r.status >= 200 && r.status < 300 ? "ok" : "error");
    });
  }
})();
