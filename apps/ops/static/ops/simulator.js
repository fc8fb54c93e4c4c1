// The client simulator: a mobile app in a browser page (SPEC.md section 3, mobile WebSocket).
// Plain JavaScript, no build step. It uses only what a real app uses: a ticket from
// POST /api/v1/realtime/tickets/ (token in the Authorization header), /ws/mobile/?ticket=...,
// and the frames message / skip / status / typing / chat.accepted / pong / error.
(function () {
  "use strict";

  var root = document.getElementById("simulator");
  var $ = function (id) { return document.getElementById(id); };
  var PING_MS = 20000;  // the server wants one at least every 30 s
  var TYPING_IDLE_MS = 3000;
  var LOG_LINES = 200;

  var ws = null;
  var wantOnline = false;  // false after "Go offline": no reconnecting then
  var retryMs = 1000;
  var retryTimer = null;
  var pingTimer = null;
  var typingTimer = null;
  var typingOn = false;
  var clientIds = 0;
  // seq -> {seq, id, status, message, copies}
  var rows = new Map();
  // client_id or message id -> {content, status}
  var sent = new Map();

  // For the browser tests and people at the console.
  window.simulator = { rows: rows, sent: sent, frames: 0, receive: null };

  function log(direction, frame) {
    var el = $("log");
    var line = document.createElement("div");
    var body = JSON.stringify(frame);
    line.textContent = new Date().toLocaleTimeString() + " " + direction + " " + (body.length > 300 ? body.slice(0, 300) + "…" : body);
    if (frame && frame.type === "error") line.style.color = "#dc2626";
    el.appendChild(line);
    while (el.childNodes.length > LOG_LINES) el.removeChild(el.firstChild);
    el.scrollTop = el.scrollHeight;
  }

  function setState(state, detail) {
    var el = $("state");
    el.dataset.state = state;
    el.textContent = state + (detail ? " (" + detail + ")" : "");
    $("offline").disabled = state !== "online" && state !== "connecting";
    $("connect").disabled = state === "online" || state === "connecting";
  }

  function token() { return $("token").value.trim(); }

  function api(method, path) {
    return fetch(path, {
      method: method,
      credentials: "omit",  // the token authenticates; no session cookie rides along
      headers: { Authorization: "Token " + token(), Accept: "application/json" },
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        if (!resp.ok) throw new Error(resp.status + ": " + (body.detail || resp.statusText));
        return body;
      });
    });
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      log("!", { type: "not sent (offline)", frame: frame.type });
      return false;
    }
    ws.send(JSON.stringify(frame));
    if (frame.type !== "ping") log("→", frame);
    return true;
  }

  // --- connecting --------------------------------------------------------------------------

  function connect() {
    if (!token()) { setState("offline", "paste a mobile token first"); return; }
    clearTimeout(retryTimer);
    wantOnline = true;
    setState("connecting");
    api("POST", root.dataset.ticketUrl).then(function (body) {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + location.host + root.dataset.socketPath + "?ticket=" + encodeURIComponent(body.ticket));
      ws = socket;
      socket.onopen = function () {
        if (ws !== socket) return;
        setState("online");
        retryMs = 1000;
        pingTimer = setInterval(function () { send({ type: "ping" }); }, PING_MS);
      };
      socket.onmessage = function (event) { receive(JSON.parse(event.data)); };
      socket.onclose = function (event) {
        if (ws !== socket) return;
        clearInterval(pingTimer);
        ws = null;
        if (event.code === 4401) {
          wantOnline = false;
          setState("offline", "4401: token or ticket refused");
        } else if (wantOnline) {
          reconnectLater("closed " + event.code);
        } else {
          setState("offline");
        }
      };
    }).catch(function (err) {
      // A refused token stays refused; anything else (server restarting) is worth a retry.
      if (/^40[13]:/.test(err.message)) { wantOnline = false; setState("offline", "ticket: " + err.message); }
      else reconnectLater("ticket: " + err.message);
    });
  }

  // As an app does after a lost connection: try again, waiting longer each time (up to 10 s).
  function reconnectLater(why) {
    setState("offline", why + "; reconnecting in " + retryMs / 1000 + " s");
    $("offline").disabled = false;
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  }

  function goOffline() {
    wantOnline = false;
    clearTimeout(retryTimer);
    if (ws) ws.close(1000, "offline");
    else setState("offline");
  }

  // --- frames from the server --------------------------------------------------------------

  function receive(frame) {
    window.simulator.frames += 1;
    if (frame.type !== "pong") log("←", frame);
    switch (frame.type) {
      case "message": return onMessage(frame.message);
      case "skip": return onSkip(frame.seq);
      case "status": return onStatus(frame);
      case "typing": return onTyping(frame);
      case "chat.accepted": return onAccepted(frame);
      default: return null;
    }
  }

  function onMessage(m) {
    var row = rows.get(m.seq);
    if (row && row.id === m.id) {
      row.copies += 1;  // a redelivery: same id, same seq; the server wants the ack again
    } else {
      row = { seq: m.seq, id: m.id, status: "received", message: m, copies: 1 };
      rows.set(m.seq, row);
    }
    if ($("auto-ack").checked) ack([row]);
    render();
  }

  function onSkip(seq) {
    // A canceled message: its seq stays taken, so this is no gap.
    rows.set(seq, { seq: seq, id: null, status: "skipped", message: null, copies: 1 });
    render();
  }

  function onStatus(frame) {
    var entry = sent.get(frame.message_id);
    if (entry) { entry.status = frame.status; renderSent(); }
  }

  function onTyping(frame) {
    $("typing").textContent = frame.is_typing ? "The business is typing in " + frame.conversation_id + "…" : "";
  }

  function onAccepted(frame) {
    var entry = sent.get(frame.client_id) || { content: frame.message.content };
    sent.delete(frame.client_id);
    entry.status = "accepted";
    sent.set(frame.message.id, entry);
    renderSent();
  }

  // --- receipts ----------------------------------------------------------------------------

  function ack(list) {
    var ids = list.filter(function (r) { return r.id; }).map(function (r) { return r.id; });
    if (ids.length && send({ type: "ack", message_ids: ids })) {
      list.forEach(function (r) { if (r.status === "received") r.status = "acked"; });
    }
  }

  function read(list) {
    var ids = list.filter(function (r) { return r.id; }).map(function (r) { return r.id; });
    if (ids.length && send({ type: "read", message_ids: ids })) {
      list.forEach(function (r) { if (r.id) r.status = "read"; });
    }
  }

  function pendingRows(status) {
    return Array.from(rows.values()).filter(function (r) { return r.id && status.indexOf(r.status) >= 0; });
  }

  // --- chat --------------------------------------------------------------------------------

  function loadConversations() {
    api("GET", root.dataset.conversationsUrl).then(function (body) {
      var select = $("conversations");
      select.textContent = "";
      var list = body.results || [];
      if (!list.length) select.appendChild(new Option("(no conversation yet)", ""));
      list.forEach(function (c) {
        var label = (c.business && c.business.name ? c.business.name : "business") + " · " + c.status + " · " + c.id.slice(0, 8);
        select.appendChild(new Option(label, c.id));
      });
      if (list.length) $("conversation-id").value = list[0].id;
    }).catch(function (err) { log("!", { type: "conversations", detail: err.message }); });
  }

  function typing(on) {
    var conversation = $("conversation-id").value.trim();
    if (!conversation || typingOn === on) return;
    typingOn = on;
    send({ type: "typing", conversation_id: conversation, is_typing: on });
  }

  function chatSend() {
    var conversation = $("conversation-id").value.trim();
    var content = $("chat-content").value;
    if (!conversation || !content) return;
    clientIds += 1;
    var clientId = "sim-" + Date.now() + "-" + clientIds;
    if (send({ type: "chat.send", conversation_id: conversation, content: content, content_type: "text", client_id: clientId })) {
      sent.set(clientId, { content: content, status: "sending" });
      $("chat-content").value = "";
      clearTimeout(typingTimer);
      typing(false);
      renderSent();
    }
  }

  // --- drawing -----------------------------------------------------------------------------

  function cell(tr, value) {
    var td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value);
    else td.textContent = value === null || value === undefined ? "" : String(value);
    tr.appendChild(td);
    return td;
  }

  function button(label, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  function gapsOf(seqs) {
    var gaps = [];
    for (var i = 1; i < seqs.length; i++) {
      for (var s = seqs[i - 1] + 1; s < seqs[i]; s++) gaps.push(s);
    }
    return gaps;
  }

  function render() {
    var seqs = Array.from(rows.keys()).sort(function (a, b) { return a - b; });
    var gaps = gapsOf(seqs);
    var gapSet = new Set(gaps);
    var all = seqs.concat(gaps).sort(function (a, b) { return a - b; });
    var body = $("messages");
    body.textContent = "";
    all.forEach(function (seq) {
      var tr = document.createElement("tr");
      tr.dataset.seq = seq;
      if (gapSet.has(seq)) {
        tr.className = "gap";
        tr.dataset.status = "missing";
        cell(tr, seq);
        var td = cell(tr, "missing: not received (yet)");
        td.colSpan = 6;
        body.appendChild(tr);
        return;
      }
      var row = rows.get(seq);
      tr.dataset.status = row.status;
      cell(tr, seq);
      if (!row.message) {
        tr.dataset.id = "";
        var skipped = cell(tr, "skipped: canceled by its sender");
        skipped.colSpan = 4;
        cell(tr, "skipped");
        cell(tr, "");
      } else {
        var m = row.message;
        tr.dataset.id = m.id;
        cell(tr, m.id.slice(0, 8));
        cell(tr, m.kind + (m.priority !== "normal" ? " · " + m.priority : ""));
        cell(tr, m.sender ? m.sender.name || m.sender.type : "");
        cell(tr, (m.subject ? m.subject + ": " : "") + m.content + (m.attachments && m.attachments.length ? " [" + m.attachments.length + " attachment(s)]" : ""));
        cell(tr, row.status + (row.copies > 1 ? " (×" + row.copies + ")" : ""));
        var actions = document.createElement("span");
        actions.appendChild(button("Ack", function () { ack([row]); render(); }));
        actions.appendChild(button("Read", function () { read([row]); render(); }));
        cell(tr, actions);
      }
      body.appendChild(tr);
    });
    $("count-received").textContent = String(pendingRows(["received", "acked", "read"]).length);
    $("gaps").textContent = gaps.length ? gaps.join(", ") : "none";
  }

  function renderSent() {
    var body = $("sent");
    body.textContent = "";
    sent.forEach(function (entry, key) {
      var tr = document.createElement("tr");
      tr.dataset.key = key;
      tr.dataset.status = entry.status;
      cell(tr, entry.content);
      cell(tr, entry.status);
      body.appendChild(tr);
    });
  }

  // --- wiring ------------------------------------------------------------------------------

  $("connect-form").addEventListener("submit", function (e) { e.preventDefault(); connect(); });
  $("offline").addEventListener("click", goOffline);
  $("ack-all").addEventListener("click", function () { ack(pendingRows(["received"])); render(); });
  $("read-all").addEventListener("click", function () { read(pendingRows(["received", "acked"])); render(); });
  $("load-conversations").addEventListener("click", loadConversations);
  $("conversations").addEventListener("change", function (e) { if (e.target.value) $("conversation-id").value = e.target.value; });
  $("chat-send").addEventListener("click", chatSend);
  $("chat-content").addEventListener("keydown", function (e) { if (e.key === "Enter") chatSend(); });
  $("chat-content").addEventListener("input", function () {
    typing(true);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { typing(false); }, TYPING_IDLE_MS);
  });
  // Feeding a frame by hand (console, browser tests) draws it as if the server had sent it.
  window.simulator.receive = receive;
  setState("offline");
})();
