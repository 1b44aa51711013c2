// The dashboard: search the metric list, chart metrics with uPlot, keep the view in the
// URL fragment (#m=a,b&r=1h&a=avg&q=web.&live=1). It reads the public JSON API with the
// session cookie the login set (no key ever appears in a URL). No inline script (CSP),
// no innerHTML (Trusted Types): the DOM is built with createElement/textContent.
"use strict";

(function () {
  const RANGES = { "1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  // Bucket sizes the API accepts (each divides a day); the smallest giving <= 360 buckets.
  const STEPS = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400];
  const MAX_BUCKETS = 360;
  const PAGE_SIZE = 50; // names per page of a prefix search
  const GLOB_SCAN = 1000; // names read per API page when filtering by a glob
  const GLOB_PAGES = 5; // API pages read at most per page of glob results
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                  "#db2777", "#4b5563"];
  const HEIGHT = 380;
  const ALERTS_EVERY = 15000; // ms between reloads of the alert rules and their states
  // What each kind answers (protocol/buckets.py), of the picker's choices: a choice a
  // charted metric's kind does not answer charts that metric with its default (auto).
  const BUCKET_AGGS = ["sum", "count", "avg", "min", "max", "rate"];
  const PERCENTILES = ["p50", "p90", "p99", "p999"];
  const BY_KIND = {
    counter: BUCKET_AGGS,
    value: [...BUCKET_AGGS, ...PERCENTILES],
    gauge: [...BUCKET_AGGS, "last"],
    set: ["count", "rate", "unique"],
  };
  const CHOICES = [...BUCKET_AGGS, ...PERCENTILES, "last", "unique"];
  const KIND_BADGE = { counter: "c", value: "v", gauge: "g", set: "s" };
  // Read from per-minute sketches: their interval is at least a minute.
  const byMinute = (aggregation) => aggregation === "unique" || aggregation === "last" ||
    PERCENTILES.includes(aggregation);
  const THRESHOLD_COLOR = "#dc2626";

  const $ = (id) => document.getElementById(id);
  const chartEl = $("chart");

  const state = { metrics: [], range: "1h", from: null, to: null, agg: "", query: "",
                  live: false };
  const kinds = new Map(); // name -> its kind, from the list and the series
  const list = { cursors: [null], page: 0, next: null, poll: null, seq: 0 };
  let plot = null;
  let plotSignature = "";
  let drawSeq = 0;
  let revision = 0;
  let timer = null;
  let alertRules = []; // GET /api/alerts: the rules with their states
  let thresholdSignature = "";

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    let response;
    try {
      response = await fetch(path, { credentials: "same-origin",
                                     headers: { Accept: "application/json" } });
    } catch (error) {
      throw new ApiFailure(0, "cannot reach the server");
    }
    if (response.status === 401) { // no session, or its key was revoked
      location.replace("/login" + location.hash);
      throw new ApiFailure(401, "not logged in");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      throw new ApiFailure(response.status, "the answer is not JSON");
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      throw new ApiFailure(response.status, message);
    }
    return body;
  }

  function query(params) {
    const out = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") out.set(name, String(value));
    }
    return out.toString();
  }

  // -- the view in the URL fragment ----------------------------------------------------

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.metrics = (p.get("m") || "").split(",").filter((n) => /^[A-Za-z0-9_.-]+$/.test(n));
    const range = p.get("r");
    state.range = range in RANGES || range === "custom" ? range : "1h";
    state.from = Number(p.get("from")) || null;
    state.to = Number(p.get("to")) || null;
    if (state.range === "custom" && !(state.from && state.to && state.from < state.to)) {
      state.range = "1h";
    }
    const agg = p.get("a") || "";
    state.agg = CHOICES.includes(agg) ? agg : "";
    state.query = p.get("q") || "";
    state.live = p.get("live") === "1";
  }

  function writeHash() {
    const custom = state.range === "custom";
    const text = query({ m: state.metrics.join(","), r: state.range,
                         from: custom ? state.from : null, to: custom ? state.to : null,
                         a: state.agg, q: state.query, live: state.live ? "1" : null });
    const url = location.pathname + location.search + (text ? "#" + text : "");
    if (url !== location.pathname + location.search + location.hash) {
      history.replaceState(null, "", url); // replace: a view change is not a page
    }
  }

  // -- the metric list -----------------------------------------------------------------

  // Graphite-style glob: * and ? stay within one dot-separated part; [abc], {a,b}.
  function globRegExp(glob) {
    let out = "";
    for (let i = 0; i < glob.length; i++) {
      const c = glob[i];
      if (c === "*") out += "[^.]*";
      else if (c === "?") out += "[^.]";
      else if (c === "[") {
        const end = glob.indexOf("]", i + 1);
        if (end < 0) { out += "\\["; continue; }
        out += "[" + glob.slice(i + 1, end).replace(/[\\^\]]/g, "\\$&") + "]";
        i = end;
      } else if (c === "{") {
        const end = glob.indexOf("}", i + 1);
        if (end < 0) { out += "\\{"; continue; }
        const options = glob.slice(i + 1, end).split(",");
        out += "(?:" + options.map((o) => o.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")";
        i = end;
      } else out += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }
    return new RegExp("^" + out + "$");
  }

  async function loadList() {
    const text = state.query.trim();
    const firstGlob = text.search(/[*?[{]/);
    const prefix = firstGlob < 0 ? text : text.slice(0, firstGlob);
    const matcher = firstGlob < 0 ? null : globRegExp(text);
    if (!/^[A-Za-z0-9_.-]*$/.test(prefix)) {
      $("list-status").textContent = "names hold only A-Z a-z 0-9 _ - .";
      renderList([]);
      return;
    }
    const seq = ++list.seq; // answers of an older search are dropped
    let cursor = list.cursors[list.page];
    const found = [];
    try {
      for (let read = 0; read < (matcher ? GLOB_PAGES : 1); read++) {
        const body = await api("/api/metrics?" + query({
          prefix, limit: matcher ? GLOB_SCAN : PAGE_SIZE, cursor }));
        if (seq !== list.seq) return;
        for (const m of body.metrics) {
          kinds.set(m.name, m.kind);
          if (!matcher || matcher.test(m.name)) found.push(m);
        }
        cursor = body.next_cursor;
        if (!cursor || found.length > 0) break;
      }
    } catch (error) {
      if (seq === list.seq) $("list-status").textContent = error.message;
      return;
    }
    list.next = cursor;
    clearTimeout(list.poll);
    if (found.length === 0 && text === "" && list.page === 0) {
      // A fresh install: say how to send one, and look again until one arrives.
      $("list-status").textContent =
        "No metrics yet. Send one: echo 'page.views:1|c' | nc -u -w0 127.0.0.1 8125";
      list.poll = setTimeout(loadList, 5000);
      renderList(found);
      return;
    }
    const shown = found.length === 0 ? "no metric matches" :
      `${found.length} metric${found.length === 1 ? "" : "s"}` + (cursor ? ", more on the next page" : "");
    $("list-status").textContent = shown;
    renderList(found);
  }

  function renderList(metrics) {
    const ul = $("metric-list");
    ul.replaceChildren();
    for (const m of metrics) {
      const li = document.createElement("li");
      li.dataset.metric = m.name;
      li.classList.toggle("selected", state.metrics.includes(m.name));
      const name = document.createElement("button");
      name.type = "button";
      name.className = "metric-name";
      name.textContent = m.name;
      name.title = `chart ${m.name} (${m.kind}); last seen ${m.last_seen || "never"}`;
      name.addEventListener("click", () => { setMetrics([m.name]); });
      const add = document.createElement("button");
      add.type = "button";
      add.className = "metric-add";
      add.textContent = "+";
      add.title = "overlay on the chart";
      add.addEventListener("click", () => {
        if (!state.metrics.includes(m.name)) setMetrics([...state.metrics, m.name]);
      });
      const kind = document.createElement("span");
      kind.className = "kind " + m.kind;
      kind.textContent = KIND_BADGE[m.kind] || "?";
      li.append(kind, name, add);
      ul.append(li);
    }
    $("prev").disabled = list.page === 0;
    $("next").disabled = !list.next;
    $("page-number").textContent = list.page > 0 || list.next ? `page ${list.page + 1}` : "";
  }

  function search() {
    list.cursors = [null];
    list.page = 0;
    writeHash();
    loadList();
  }

  // -- the alert rules -----------------------------------------------------------------

  function ruleWatches(rule, name) {
    return rule.metric.includes("*") ? globRegExp(rule.metric).test(name) : rule.metric === name;
  }

  // The threshold rules on the charted metrics: each is drawn as a dashed line.
  function thresholds() {
    return alertRules.filter((r) => r.kind === "threshold" &&
                             state.metrics.some((name) => ruleWatches(r, name)));
  }

  async function loadAlerts() {
    let body;
    try {
      body = await api("/api/alerts?limit=1000");
    } catch (error) {
      if (error.status !== 401) $("alerts-status").textContent = error.message;
      return;
    }
    alertRules = body.alerts;
    renderAlerts();
    const signature = JSON.stringify(thresholds().map((r) => [r.id, r.threshold]));
    if (signature !== thresholdSignature && state.metrics.length > 0) draw();
  }

  function renderAlerts() {
    const ul = $("alert-list");
    ul.replaceChildren();
    const firing = alertRules.filter((r) => r.state === "firing").length;
    $("alerts-status").textContent = alertRules.length === 0 ? "No alert rules." :
      `${alertRules.length} rule${alertRules.length === 1 ? "" : "s"}, ${firing} firing`;
    for (const rule of alertRules) {
      const li = document.createElement("li");
      li.dataset.rule = String(rule.id);
      li.dataset.state = rule.state;
      const badge = document.createElement("span");
      badge.className = "alert-state " + rule.state;
      badge.textContent = rule.state;
      const name = document.createElement("button");
      name.type = "button";
      name.className = "alert-name";
      name.textContent = rule.name;
      name.title = rule.kind === "threshold"
        ? `${rule.metric}: ${rule.aggregation} over ${rule.window} ${rule.op} ${rule.threshold}`
        : `${rule.metric}: no data for ${rule.absent_for}`;
      // Chart the metric: a glob's firing (else first) match, or the name itself.
      const hot = rule.states.find((s) => s.state === "firing") || rule.states[0];
      const metric = hot ? hot.metric : (rule.metric.includes("*") ? null : rule.metric);
      name.disabled = metric === null;
      name.addEventListener("click", () => { if (metric) setMetrics([metric]); });
      li.append(badge, name);
      ul.append(li);
    }
  }

  // -- the chart -----------------------------------------------------------------------

  function pickStep(seconds) {
    for (const step of STEPS) if (seconds / step <= MAX_BUCKETS) return step;
    return Math.ceil(seconds / MAX_BUCKETS / 86400) * 86400;
  }

  function timeWindow() {
    if (state.range === "custom") {
      return { from: state.from, to: state.to, step: pickStep(state.to - state.from) };
    }
    const span = RANGES[state.range];
    const step = pickStep(span);
    const to = (Math.floor(Date.now() / 1000 / step) + 1) * step; // through the current bucket
    return { from: to - span, to, step };
  }

  // The aggregation a metric is charted with: the picked one if its kind answers it,
  // else its default ("" = auto); null while its kind is not known yet.
  function aggregationFor(kind) {
    if (state.agg === "") return "";
    if (kind === undefined) return null;
    return (BY_KIND[kind] || BUCKET_AGGS).includes(state.agg) ? state.agg : "";
  }

  async function fetchSeries(name, view) {
    // A coarser step starts at its first whole bucket in the view: its buckets' starts
    // are then among the view's own (the x axis), none before it.
    const url = (aggregation, step) => `/api/metrics/${encodeURIComponent(name)}?` +
      query({ from: step === view.step ? view.from : Math.ceil(view.from / step) * step,
              to: view.to, interval: step + "s", aggregation });
    // Sketch aggregations (percentiles, unique, last) come by the minute at the finest;
    // so does a set's auto (unique).
    const stepFor = (aggregation, kind) =>
      byMinute(aggregation) || (aggregation === "" && kind === "set") ?
        Math.max(view.step, 60) : view.step;
    // A value metric averaged gets its min-max band; its kind may not be known yet.
    const band = (kind, aggregation) =>
      kind === "value" && (aggregation === "" || aggregation === "avg");
    let kind = kinds.get(name);
    let main = null;
    let aggregation = aggregationFor(kind);
    if (aggregation === null) { // learn the kind from the default series first
      main = await api(url("", view.step));
      kind = main.kind;
      kinds.set(name, kind);
      aggregation = aggregationFor(kind);
      if (aggregation !== "" || stepFor("", kind) !== view.step) main = null;
    }
    const step = stepFor(aggregation, kind);
    const wanted = main ? [] : [aggregation];
    if (band(kind, aggregation)) wanted.push("min", "max");
    const answers = await Promise.all(wanted.map((a) => api(url(a, step))));
    if (main) answers.unshift(main);
    kinds.set(name, answers[0].kind);
    if (band(answers[0].kind, aggregation) && answers.length === 1) {
      answers.push(...await Promise.all(["min", "max"].map((a) => api(url(a, step)))));
    }
    return { name, kind: answers[0].kind, main: answers[0], band: answers.slice(1) };
  }

  function seconds(iso) {
    return Date.parse(iso) / 1000;
  }

  function column(x, points) {
    const byTime = new Map(points.map((p) => [seconds(p.timestamp), p.value]));
    return x.map((t) => (byTime.has(t) ? byTime.get(t) : null));
  }

  function fade(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  async function draw() {
    const seq = ++drawSeq;
    renderSelected();
    if (state.metrics.length === 0) {
      if (plot) { plot.destroy(); plot = null; plotSignature = ""; }
      $("chart-status").textContent = "Pick a metric from the list (+ overlays it).";
      chartEl.dataset.state = "empty";
      return;
    }
    const view = timeWindow();
    chartEl.dataset.state = "loading";
    const settled = await Promise.allSettled(state.metrics.map((n) => fetchSeries(n, view)));
    if (seq !== drawSeq) return; // a newer view is on its way
    const problems = [];
    const results = [];
    settled.forEach((r, i) => {
      if (r.status === "fulfilled") results.push(r.value);
      else if (r.reason.status !== 401) problems.push(`${state.metrics[i]}: ${r.reason.message}`);
    });
    renderSelected();
    $("chart-status").textContent = problems.join("; ");
    if (results.length === 0) {
      chartEl.dataset.state = "error";
      return;
    }
    // Every bucket start of every series: a sketch aggregation's buckets are minutes
    // at the finest, coarser than the others' at short ranges.
    const x = [...new Set(results.flatMap((r) => r.main.points.map((p) => seconds(p.timestamp))))]
      .sort((a, b) => a - b);
    const data = [x];
    const series = [{}];
    const described = [];
    const bands = [];
    results.forEach((r, i) => {
      const color = COLORS[i % COLORS.length];
      data.push(column(x, r.main.points));
      // spanGaps: empty buckets of avg/min/max are null; draw a line across them.
      series.push({ label: `${r.name} (${r.main.aggregation})`, stroke: color, width: 2,
                    spanGaps: true });
      described.push({ metric: r.name, aggregation: r.main.aggregation });
      if (r.band.length === 2) {
        const [low, high] = r.band;
        data.push(column(x, high.points), column(x, low.points));
        const edge = { stroke: fade(color, 0.35), width: 1, spanGaps: true };
        series.push({ ...edge, label: `${r.name} (max)` }, { ...edge, label: `${r.name} (min)` });
        described.push({ metric: r.name, aggregation: "max" }, { metric: r.name, aggregation: "min" });
        bands.push({ series: [data.length - 2, data.length - 1], fill: fade(color, 0.15) });
      }
    });
    const lines = thresholds();
    for (const rule of lines) {
      data.push(x.map(() => rule.threshold));
      series.push({ label: `${rule.name}: ${rule.aggregation} over ${rule.window} ${rule.op} ` +
                           `${rule.threshold}`,
                    stroke: THRESHOLD_COLOR, width: 1.5, dash: [6, 4], points: { show: false } });
      described.push({ rule: rule.id, threshold: rule.threshold });
    }
    thresholdSignature = JSON.stringify(lines.map((r) => [r.id, r.threshold]));
    const signature = JSON.stringify(described);
    if (plot && signature === plotSignature) {
      plot.setData(data); // same series: update in place, no flicker
    } else {
      if (plot) plot.destroy();
      chartEl.replaceChildren();
      plot = new uPlot({
        width: Math.max(chartEl.clientWidth, 320),
        height: HEIGHT,
        series,
        bands,
        scales: { x: { time: true } },
        axes: [{}, { size: 70 }],
        cursor: { drag: { x: true, y: false } },
      }, data, chartEl);
      plotSignature = signature;
    }
    // For tests and tools: what is drawn, and the view it was asked for.
    chartEl.gfPlot = plot;
    chartEl.dataset.series = signature;
    chartEl.dataset.view = JSON.stringify({ from: view.from, to: view.to, step: view.step });
    chartEl.dataset.revision = String(++revision);
    chartEl.dataset.state = "ready";
    performance.mark("gf:chart-drawn"); // scripts/bench: time to first chart
  }

  function renderSelected() {
    const ul = $("selected");
    ul.replaceChildren();
    state.metrics.forEach((name, i) => {
      const li = document.createElement("li");
      li.style.borderColor = COLORS[i % COLORS.length];
      const label = document.createElement("span");
      label.textContent = name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = `remove ${name}`;
      remove.addEventListener("click", () => {
        setMetrics(state.metrics.filter((n) => n !== name));
      });
      li.append(label, remove);
      ul.append(li);
    });
    for (const li of $("metric-list").children) {
      li.classList.toggle("selected", state.metrics.includes(li.dataset.metric));
    }
  }

  // -- controls ------------------------------------------------------------------------

  function setMetrics(names) {
    state.metrics = names;
    writeHash();
    draw();
  }

  function localInput(epoch) { // seconds -> a datetime-local value in local time
    const d = new Date(epoch * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function renderControls() {
    for (const b of $("ranges").querySelectorAll("button")) {
      b.classList.toggle("active", b.dataset.range === state.range);
    }
    $("custom").hidden = state.range !== "custom";
    if (state.range === "custom") {
      $("from").value = localInput(state.from);
      $("to").value = localInput(state.to);
    }
    $("aggregation").value = state.agg;
    $("refresh").checked = state.live;
    if ($("search").value !== state.query) $("search").value = state.query;
  }

  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = null;
    if (!state.live) return;
    const every = Math.min(Math.max(timeWindow().step, 10), 60) * 1000;
    timer = setInterval(() => {
      if (document.hidden) return;
      draw();
      if (list.page === 0) loadList(); // new names show up too
    }, every);
  }

  function onViewChange() {
    writeHash();
    renderControls();
    schedule();
    draw();
  }

  function setRange(range) {
    if (range === "custom") {
      const view = timeWindow();
      state.from = state.from && state.range === "custom" ? state.from : view.from;
      state.to = state.to && state.range === "custom" ? state.to : view.to;
    }
    state.range = range;
    onViewChange();
  }

  function applyCustom() {
    const from = Math.floor(new Date($("from").value).getTime() / 1000);
    const to = Math.floor(new Date($("to").value).getTime() / 1000);
    if (!(from < to)) {
      $("chart-status").textContent = "custom range: 'from' must be before 'to'";
      return;
    }
    state.range = "custom";
    state.from = from;
    state.to = to;
    onViewChange();
  }

  async function logout() {
    try {
      await fetch("/logout", { method: "POST", credentials: "same-origin" });
    } finally {
      location.replace("/login");
    }
  }

  function start() {
    readHash();
    $("search").addEventListener("input", () => {
      state.query = $("search").value;
      clearTimeout(start.debounce);
      start.debounce = setTimeout(search, 200);
    });
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    $("next").addEventListener("click", () => {
      if (!list.next) return;
      list.cursors[list.page + 1] = list.next;
      list.page += 1;
      loadList();
    });
    $("prev").addEventListener("click", () => {
      if (list.page === 0) return;
      list.page -= 1;
      loadList();
    });
    for (const b of $("ranges").querySelectorAll("button")) {
      b.addEventListener("click", () => setRange(b.dataset.range));
    }
    $("apply").addEventListener("click", applyCustom);
    $("aggregation").addEventListener("change", () => {
      state.agg = $("aggregation").value;
      onViewChange();
    });
    $("refresh").addEventListener("change", () => {
      state.live = $("refresh").checked;
      writeHash();
      schedule();
    });
    $("logout").addEventListener("click", logout);
    window.addEventListener("hashchange", () => { // a pasted or edited link
      const before = state.query;
      readHash();
      renderControls();
      schedule();
      if (state.query !== before) search();
      draw();
    });
    window.addEventListener("resize", () => {
      if (plot) plot.setSize({ width: Math.max(chartEl.clientWidth, 320), height: HEIGHT });
    });
    renderControls();
    schedule();
    loadList();
    loadAlerts();
    setInterval(() => { if (!document.hidden) loadAlerts(); }, ALERTS_EVERY);
    draw();
  }

  start();
})();
