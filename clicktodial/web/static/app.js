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
    var source = new EventSource("/api/v1/events");
    source.addEventListener("registration", function (e) { onRegistration(JSON.parse(e.data)); });
    source.addEventListener("call", function (e) { onCall(JSON.parse(e.data)); });
    source.addEventListener("open", function () {
      // Catch up with what changed before the stream was open (or while it was down).
      var section = document.getElementById("call");
      if (section) {
        getJSON("/api/v1/calls/" + section.getAttribute("data-call-id"), onCall);
      }
      if (document.getElementById("directory")) {
        getJSON("/api/v1/users", function (users) { users.forEach(onRegistration); });
      }
      document.documentElement.setAttribute("data-live", "yes");
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
