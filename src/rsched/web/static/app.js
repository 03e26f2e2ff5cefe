// rsched pages: progressive enhancement only; every page works without JavaScript.
(function () {
  "use strict";

  // A form acts once: after the first submit its buttons are disabled until the page is
  // shown again (the server refuses repeats too: one-time tokens and state checks).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitted === "1") { event.preventDefault(); return; }
    form.dataset.submitted = "1";
    window.setTimeout(function () {
      form.querySelectorAll("button[type=submit],button:not([type])").forEach(function (b) {
        b.disabled = true;
      });
    }, 0);
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-submitted]").forEach(function (form) {
      delete form.dataset.submitted;
      form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
    });
  });

  // Focus the error summary of a refused form, so keyboard and screen-reader users land on it.
  var summary = document.querySelector(".error-summary");
  if (summary) { summary.focus(); }

  // Copy buttons.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      if (!field) { return; }
      field.select();
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard) { navigator.clipboard.writeText(field.value).then(done, done); }
      else { try { document.execCommand("copy"); } catch (e) { /* ignore */ } done(); }
    });
  });

  // Breach marks on the grid: one open at a time; Escape closes and returns focus.
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!opened.matches || !opened.matches("details.mark") || !opened.open) { return; }
    document.querySelectorAll("details.mark[open]").forEach(function (d) {
      if (d !== opened) { d.open = false; }
    });
  }, true);
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    document.querySelectorAll("details.mark[open]").forEach(function (d) {
      d.open = false;
      var s = d.querySelector("summary");
      if (s) { s.focus(); }
    });
  });

  // Live progress of a run from its event stream (Server-Sent Events).
  var live = document.querySelector("[data-events]");
  if (live && window.EventSource) {
    var fmt = function (value, kind) {
      if (value === null || value === undefined) { return "—"; }
      if (kind === "pct") { return (value * 100).toFixed(2) + " %"; }
      if (kind === "secs") { return Number(value).toFixed(1) + " s"; }
      if (typeof value === "number") {
        return Math.abs(value - Math.round(value)) < 1e-9 ? String(Math.round(value)) : value.toFixed(2);
      }
      return String(value);
    };
    var set = function (name, value, kind) {
      var el = live.querySelector("[data-field=" + name + "]");
      if (el) { el.textContent = fmt(value, kind); }
    };
    var status = document.getElementById("live-status");
    var source = new EventSource(live.dataset.events);
    source.addEventListener("progress", function (event) {
      var p = JSON.parse(event.data);
      set("state", p.state);
      set("objective", p.objective);
      set("bound", p.bound);
      set("gap", p.gap, "pct");
      set("elapsed", p.elapsed, "secs");
      set("solutions", p.solutions);
      [live.querySelector("[data-field=state]"), document.getElementById("run-state")].forEach(
        function (badge) {
          if (badge) { badge.className = "badge s-" + p.state; badge.textContent = p.state; }
        });
    });
    source.addEventListener("done", function () {
      source.close();
      if (status) { status.textContent = "Finished: loading the result…"; }
      window.location.replace(window.location.pathname);
    });
    source.onerror = function () {
      // The stream ends every few minutes and the browser reconnects by itself; when the
      // server refuses it (session expired) reloading the page renews the session.
      if (source.readyState === EventSource.CLOSED) {
        if (status) { status.textContent = "Live updates stopped: reloading…"; }
        window.setTimeout(function () { window.location.reload(); }, 3000);
      }
    };
  }
})();
