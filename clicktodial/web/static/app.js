// clicktodial: live updates through server-sent events (/api/v1/events).
// The pages work without this script; it only saves reloading them.
"use strict";
(function () {
  var LABELS = {
    "calling-caller": "Ringing your phone",
    "calling-callee": "Ringing the other phone",
    "connected": "Connected",
    "ended": "Ended",
    "failed": "Failed"
  };
  var ORDER = ["calling-caller", "calling-callee", "connected", "ended"];

  function duration(seconds) {
    if (typeof seconds !== "number") { return ""; }
    var whole = Math.round(seconds);
    var s = whole % 60;
    return Math.floor(whole / 60) + ":" + (s < 10 ? "0" : "") + s;
  }

  function onRegistration(reg) {
    var rows = document.querySelectorAll("#directory tr[data-user]");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      if (row.getAttribute("data-user") !== reg.username) { continue; }
      var presence = row.querySelector(".presence");
      if (presence) {
        presence.textContent = reg.registered ? "online" : "offline";
        presence.className = "presence " + (reg.registered ? "on" : "off");
      }
      var button = row.querySelector("button.call");
      if (button) { button.hidden = !reg.registered; }
    }
  }

  function onCall(call) {
    var section = document.getElementById("call");
    if (!section || section.getAttribute("data-call-id") !== call.id) { return; }
    section.setAttribute("data-state", call.state);
    document.getElementById("call-state").textContent = LABELS[call.state] || call.state;
    document.getElementById("call-reason").textContent = call.reason || "";
    document.getElementById("call-duration").textContent = duration(call.duration);
    var reached = ORDER.indexOf(call.state);
    for (var i = 0; i < ORDER.length; i++) {
      var step = section.querySelector(".step-" + ORDER[i]);
      if (step) { step.classList.toggle("reached", i <= reached); }
    }
    var active = call.state !== "ended" && call.state !== "failed";
    var form = section.querySelector(".hangup-form");
    if (form) { form.hidden = !active; }
    var button = document.getElementById("hangup");
    if (button) { button.textContent = call.state === "connected" ? "Hang up" : "Cancel"; }
    if (!active) { loadTrace(5); }
  }

  // -- the call's ladder (section#trace): whole from /api/v1/calls/ID/trace, then live ----

  function arrow(m, first) {
    var li = document.createElement("li");
    li.className = "msg";
    li.setAttribute("data-at", String(m.at_ms));
    li.setAttribute("data-key", [m.at_ms, m.direction, m.sip_call_id, m.size, m.label].join("|"));
    var details = document.createElement("details");
    var summary = document.createElement("summary");
    summary.className = "arrow from-" + m.from + " to-" + m.to +
      (m.retransmission ? " retransmission" : "");
    summary.title = m.transport + " " + m.direction + " " + m.remote + " · " + m.leg +
      "'s leg · " + m.size + " bytes";
    var t = document.createElement("span");
    t.className = "t";
    t.textContent = (m.at_ms - first) + " ms";
    var line = document.createElement("span");
    line.className = "line";
    var label = document.createElement("span");
    label.className = "label";
    label.textContent = m.label + (m.retransmission ? " (retransmission)" : "");
    line.appendChild(label);
    summary.appendChild(t);
    summary.appendChild(line);
    var pre = document.createElement("pre");
    pre.className = "sip";
    pre.textContent = m.message;  // text, never HTML
    details.appendChild(summary);
    details.appendChild(pre);
    li.appendChild(details);
    return li;
  }

  function traceSection() { return document.getElementById("trace"); }

  function addMessage(m) {
    var section = traceSection();
    var ladder = document.getElementById("ladder");
    if (!section || !ladder || section.getAttribute("data-call-id") !== m.call_id) { return; }
    var key = [m.at_ms, m.direction, m.sip_call_id, m.size, m.label].join("|");
    var shown = ladder.querySelectorAll("li.msg");
    for (var i = 0; i < shown.length; i++) {
      if (shown[i].getAttribute("data-key") === key) { return; }
    }
    var first = Number(section.getAttribute("data-first")) || 0;
    if (!first) {
      first = m.at_ms;
      section.setAttribute("data-first", String(first));
    }
    ladder.appendChild(arrow(m, first));
    document.getElementById("trace-empty").hidden = true;
  }

  function showTrace(trace) {
    var section = traceSection();
    var ladder = document.getElementById("ladder");
    if (!section || !ladder || section.getAttribute("data-call-id") !== trace.call_id) {
      return;
    }
    var old = ladder.querySelectorAll("li.msg");
    for (var i = 0; i < old.length; i++) { ladder.removeChild(old[i]); }
    var first = trace.messages.length ? Date.parse(trace.messages[0].at) : 0;
    section.setAttribute("data-first", String(first));
    trace.messages.forEach(function (m) {
      m.at_ms = first + m.time_ms;
      m.call_id = trace.call_id;
      ladder.appendChild(arrow(m, first));
    });
    var reason = document.getElementById("trace-reason");
    reason.textContent = trace.reason || "";
    reason.hidden = !trace.reason;
    var dropped = document.getElementById("trace-dropped");
    dropped.textContent = trace.dropped + " more message(s) not kept: the trace reached its bound.";
    dropped.hidden = !trace.dropped;
    document.getElementById("trace-empty").hidden = trace.messages.length > 0;
  }

  function loadTrace(tries) {
    var section = traceSection();
    if (!section) { return; }
    getJSON("/api/v1/calls/" + section.getAttribute("data-call-id") + "/trace", function (trace) {
      showTrace(trace);
      // The call's record may be written a moment after its end event: ask again.
      var call = document.getElementById("call");
      var over = call && /^(ended|failed)$/.test(call.getAttribute("data-state") || "");
      if (over && !trace.reason && tries > 0) {
        window.setTimeout(function () { loadTrace(tries - 1); }, 700);
      }
    });
  }

  function getJSON(url, then) {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (value) { if (value) { then(value); } })
      .catch(function () {});
  }

  function start() {
    if (!window.EventSource || !document.querySelector('meta[name="csrf-token"]')) { return; }
    if (!document.getElementById("directory") && !document.getElementById("call")) { return; }
    var trace = traceSection();
    var url = "/api/v1/events";
    if (trace) { url += "?trace=" + encodeURIComponent(trace.getAttribute("data-call-id")); }
    var source = new EventSource(url);
    source.addEventListener("trace", function (e) { addMessage(JSON.parse(e.data)); });
    source.addEventListener("registration", function (e) { onRegistration(JSON.parse(e.data)); });
    source.addEventListener("call", function (e) { onCall(JSON.parse(e.data)); });
    source.addEventListener("open", function () {
      // Catch up with what changed before the stream was open (or while it was down).
      var section = document.getElementById("call");
      if (section) {
        getJSON("/api/v1/calls/" + section.getAttribute("data-call-id"), onCall);
      }
      if (trace) { loadTrace(5); }
      if (document.getElementById("directory")) {
        getJSON("/api/v1/users", function (users) { users.forEach(onRegistration); });
      }
      document.documentElement.setAttribute("data-live", "yes");
    });
  }

  // -- phone links: offer to open the tel: and sip: links of any page here (/dial) ----------
  // registerProtocolHandler exists only in a secure context (HTTPS or localhost); the
  // browser asks the user before it takes effect. Both schemes are on its safe list.

  function offerPhoneLinks() {
    var section = document.getElementById("phone-links");
    var button = document.getElementById("register-handlers");
    if (!section || !button || typeof navigator.registerProtocolHandler !== "function") {
      return;
    }
    section.hidden = false;
    button.addEventListener("click", function () {
      var template = new URL(button.getAttribute("data-template"), location.href).href;
      var result = document.getElementById("register-result");
      var done = [];
      ["tel", "sip"].forEach(function (scheme) {
        try {
          navigator.registerProtocolHandler(scheme, template);
          done.push(scheme + ":");
        } catch (e) {
          result.textContent = "Your browser refused (" + e.name + "). ";
        }
      });
      if (done.length) {
        result.textContent += "Asked your browser to open " + done.join(" and ") +
          " links here: accept its prompt.";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", offerPhoneLinks);
  document.addEventListener("DOMContentLoaded", start);
})();
