/* ftgate pages: upload checks + XHR progress, live progress polling, copy buttons. No dependencies. */
(function () {
  "use strict";

  function fmtBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function lower(s) { return (s || "").toLowerCase(); }

  function endsWithAny(name, suffixes) {
    name = lower(name);
    return suffixes.some(function (s) { return s && name.endsWith(s); });
  }

  /* ---------------------------------------------------------------- upload */
  function initUpload(form) {
    var input = form.querySelector("#file");
    var drop = form.querySelector("#drop");
    var status = form.querySelector("#file-status");
    var errorBox = form.querySelector("#upload-error");
    var progressBox = form.querySelector("#upload-progress");
    var bar = form.querySelector("#upload-bar");
    var pctText = form.querySelector("#upload-pct");
    var submit = form.querySelector("#upload-submit");
    var maxBytes = parseInt(form.dataset.maxBytes, 10) || 0;
    var suffixes = {
      adapter: form.dataset.adapterSuffixes.split(","),
      dataset: form.dataset.datasetSuffixes.split(",")
    };
    var chosen = null;

    function kind() { var k = form.querySelector("input[name=kind]:checked"); return k ? k.value : "adapter"; }

    function showError(msg) {
      errorBox.textContent = msg;
      errorBox.hidden = !msg;
    }

    /* The message for a file that cannot be uploaded, or "" if it fits. */
    function problem(file) {
      if (!file) return "Choose a file first.";
      var k = kind();
      if (!endsWithAny(file.name, suffixes[k])) {
        var other = k === "adapter" ? "dataset" : "adapter";
        if (endsWithAny(file.name, suffixes[other])) {
          return "“" + file.name + "” looks like a " + other + ", but “" + k + "” is selected. " +
                 "Choose “" + other + "” above, or pick a " + suffixes[k].join(", ") + " file.";
        }
        return "“" + file.name + "” is not a type ftgate accepts. An adapter is a " + suffixes.adapter.join(", ") +
               " archive of a PEFT directory; a dataset is a " + suffixes.dataset.join(", ") + " file.";
      }
      if (file.size === 0) return "“" + file.name + "” is empty.";
      if (maxBytes && file.size > maxBytes) {
        return "“" + file.name + "” is " + fmtBytes(file.size) + "; the limit is " + fmtBytes(maxBytes) + ".";
      }
      return "";
    }

    function check() {
      var msg = chosen ? problem(chosen) : "";
      drop.classList.toggle("bad", !!msg);
      drop.classList.toggle("good", !!chosen && !msg);
      status.textContent = chosen ? chosen.name + " (" + fmtBytes(chosen.size) + ")" : "No file chosen.";
      showError(msg);
      return !msg;
    }

    function choose(file) {
      chosen = file || null;
      if (chosen) {
        /* preselect the kind the file name says, if the other kind is selected and the name fits it */
        var k = kind(), other = k === "adapter" ? "dataset" : "adapter";
        if (!endsWithAny(chosen.name, suffixes[k]) && endsWithAny(chosen.name, suffixes[other])) {
          form.querySelector("input[name=kind][value=" + other + "]").checked = true;
        }
      }
      check();
    }

    input.addEventListener("change", function () { choose(input.files[0]); });
    form.querySelectorAll("input[name=kind]").forEach(function (r) { r.addEventListener("change", check); });

    ["dragenter", "dragover"].forEach(function (ev) {
      drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (ev) {
      drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      var files = e.dataTransfer && e.dataTransfer.files;
      if (!files || !files.length) return;
      if (files.length > 1) { showError("Drop one file at a time."); return; }
      try { input.files = files; } catch (err) { /* older browsers: keep our own reference */ }
      choose(files[0]);
    });

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!chosen && input.files.length) chosen = input.files[0];
      var msg = problem(chosen);
      if (msg) { check(); showError(msg); input.focus(); return; }
      var training = form.querySelector("#training");
      if (training && training.value.trim()) {
        try { if (typeof JSON.parse(training.value) !== "object") throw new Error(); }
        catch (err) { showError("Fine-tuning overrides must be a JSON object, e.g. {\"steps\": 50}."); training.focus(); return; }
      }
      var data = new FormData();
      data.append("kind", kind());
      ["base", "policy", "name", "training"].forEach(function (n) {
        var el = form.elements[n];
        if (el && el.value.trim()) data.append(n, el.value.trim());
      });
      data.append("file", chosen, chosen.name);

      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      showError("");
      progressBox.hidden = false;
      submit.disabled = true;
      xhr.upload.addEventListener("progress", function (ev) {
        if (!ev.lengthComputable) return;
        var p = Math.round(100 * ev.loaded / ev.total);
        bar.value = p;
        pctText.textContent = p + "%";
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if ((xhr.status === 202 || xhr.status === 200) && body && body.id) {
          bar.value = 100;
          pctText.textContent = xhr.status === 200 ? "already submitted: opening it" : "uploaded: opening it";
          window.location.assign("/submissions/" + encodeURIComponent(body.id));
          return;
        }
        submit.disabled = false;
        progressBox.hidden = true;
        var msg = body && body.message ? body.message : "The upload failed (HTTP " + xhr.status + ").";
        if (xhr.status === 401) msg += " Sign in again in another tab, then retry.";
        showError(msg);
      });
      xhr.addEventListener("error", function () {
        submit.disabled = false;
        progressBox.hidden = true;
        showError("The upload did not reach the server. Check the connection and try again.");
      });
      xhr.send(data);
    });
  }

  /* -------------------------------------------------------------- progress */
  var WORDS = {
    queued: "Waiting for a worker", inspecting: "Inspecting the upload",
    finetuning: "Fine-tuning the base model on your dataset",
    evaluating: "Evaluating base and candidate on the test suites", deciding: "Deciding"
  };

  function initProgress(card) {
    var url = card.dataset.poll;
    if (!url) return;
    var terminal = (card.dataset.terminal || "").split(" ");  // the service's finished statuses (ftgate/status.py)
    var bar = card.querySelector("#progress-bar");
    var pct = card.querySelector("#progress-pct");
    var msg = card.querySelector("#progress-message");
    var words = card.querySelector("#status-words");
    var badge = card.querySelector(".status");
    var failures = 0;

    function update(d) {
      if (terminal.indexOf(d.status) >= 0) { window.location.reload(); return true; }
      var p = (d.progress && d.progress.percent) || 0;
      if (bar) bar.value = p;
      if (pct) pct.textContent = Math.round(p) + "%";
      if (msg) msg.textContent = (d.progress && d.progress.message) || "waiting for a worker";
      if (words) words.textContent = WORDS[d.status] || d.status;
      if (badge) { badge.className = "status status-" + d.status; badge.textContent = d.status; }
      card.dataset.status = d.status;
      card.querySelectorAll(".step").forEach(function (li) {
        var st = li.dataset.stage, cur = d.stage;
        var runs = (d.stage_runs || []).filter(function (r) { return r.stage === st && r.status === "succeeded"; });
        var state = st === cur ? "current" : (runs.length ? "done" : "todo");
        li.className = "step step-" + state;
        if (state === "current") li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
        var sr = li.querySelector(".sr-only");
        if (sr) sr.textContent = " (" + state + ")";
      });
      return false;
    }

    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (d) { failures = 0; if (!update(d)) schedule(2000); })
        .catch(function () { failures++; schedule(Math.min(30000, 2000 * Math.pow(2, failures))); });
    }
    function schedule(ms) { window.setTimeout(poll, ms); }
    schedule(2000);
  }

  /* ------------------------------------------------------------------ copy */
  function initCopy(btn) {
    btn.addEventListener("click", function () {
      var el = document.querySelector(btn.dataset.copy);
      if (!el) return;
      el.select();
      var done = function () { btn.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(el.value).then(done, function () {});
      else { try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ } }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload-form");
    if (form) initUpload(form);
    var card = document.getElementById("progress");
    if (card) initProgress(card);
    document.querySelectorAll("[data-copy]").forEach(initCopy);
  });
})();
