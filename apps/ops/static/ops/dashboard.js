// The ops dashboard: polls /ops/stats.json and redraws its uPlot charts, without a reload.
// The server computes every figure (rates, percentiles, history: apps/ops/dashboard.py); this
// file only draws, so every operator sees the same numbers.
(function () {
  "use strict";

  var root = document.getElementById("ops");
  var statsUrl = root.dataset.statsUrl;
  var intervalMs = Number(root.dataset.intervalMs) || 1000;
  var loginUrl = root.dataset.loginUrl;
  var COLORS = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2"];

  // Chart id -> series keys of the answer's `series` (backlog's come from the answer).
  var CHARTS = {
    throughput: { keys: ["accepted", "delivered", "failed"], unit: "/s" },
    latency: { keys: ["p50", "p95", "p99"], unit: " ms" },
    backlog: { keys: null, unit: "" },
    connections: { keys: ["connections"], unit: "" },
    dead_letters: { keys: ["dead_letters"], unit: "" },
    breakers: { keys: ["breakers_open"], unit: "" },
  };
  var charts = {};
  // For people debugging in the console, and for the browser tests.
  window.opsDashboard = { charts: charts, last: null, updates: 0 };

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value === null || value === undefined ? "–" : String(value);
  }

  function chartWidth(el) {
    return Math.max(300, el.clientWidth || el.parentNode.clientWidth - 16);
  }

  function makeChart(id, keys, unit, data) {
    var el = document.getElementById("chart-" + id);
    var series = [{}];
    keys.forEach(function (key, i) {
      series.push({
        label: key.replace(/^backlog_/, "").replace("_", " "),
        stroke: COLORS[i % COLORS.length],
        width: 2,
        spanGaps: true,
        value: function (u, v) { return v === null || v === undefined ? "–" : v + unit; },
      });
    });
    var opts = {
      width: chartWidth(el),
      height: 200,
      series: series,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [{}, { size: 60 }],
      legend: { live: true },
    };
    return new uPlot(opts, data, el);
  }

  function chartData(answer, keys) {
    var s = answer.series;
    return [s.t].concat(keys.map(function (k) { return s[k] || s.t.map(function () { return null; }); }));
  }

  function draw(answer) {
    Object.keys(CHARTS).forEach(function (id) {
      var def = CHARTS[id];
      var keys = def.keys || Object.keys(answer.series).filter(function (k) { return k.indexOf("backlog_") === 0; });
      var data = chartData(answer, keys);
      var chart = charts[id];
      if (chart && chart.series.length !== keys.length + 1) {
        chart.destroy();
        chart = null;
      }
      if (!chart) charts[id] = makeChart(id, keys, def.unit, data);
      else chart.setData(data);
    });
  }

  function show(answer) {
    var now = answer.now;
    ["accepted", "delivered", "failed"].forEach(function (name) {
      text("value-" + name, now.per_second[name]);
      text("total-" + name, now.totals[name]);
    });
    ["p50", "p95", "p99"].forEach(function (name) {
      var v = now.latency_ms[name];
      text("value-" + name, v === null ? null : v + " ms");
    });
    text("value-connections", now.connections);
    text("value-dead-letters", now.dead_letters);
    text("latency-window", answer.latency_window_seconds);
    text("host", answer.host);
    var list = document.getElementById("breakers");
    list.textContent = "";
    Object.keys(now.breakers).sort().forEach(function (name) {
      var li = document.createElement("li");
      li.dataset.name = name;
      li.dataset.state = now.breakers[name];
      li.textContent = name + ": " + now.breakers[name].replace("_", "-");
      list.appendChild(li);
    });
    text("updated", "updated " + new Date(answer.generated_at).toLocaleTimeString() + " · sample " + answer.sample);
    problem(answer.degraded || (now.backlog === null ? "The database did not answer: backlog unknown." : ""));
    draw(answer);
    window.opsDashboard.last = answer;
    window.opsDashboard.updates += 1;
  }

  function problem(message, html) {
    var el = document.getElementById("problem");
    el.hidden = !message;
    if (html) el.innerHTML = html;
    else el.textContent = message || "";
  }

  function poll() {
    fetch(statsUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (resp) {
        var json = (resp.headers.get("Content-Type") || "").indexOf("application/json") === 0;
        if (resp.redirected || !json || resp.status === 403) {
          problem("x", 'Your session ended or is not staff: <a href="' + loginUrl + '">log in again</a>.');
          return null;
        }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (answer) { if (answer) show(answer); })
      .catch(function (err) { problem("Could not load the figures (" + err.message + "); retrying."); })
      .then(function () { setTimeout(poll, intervalMs); });
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (id) {
      var el = document.getElementById("chart-" + id);
      charts[id].setSize({ width: chartWidth(el), height: 200 });
    });
  });

  poll();
})();
