// Proofline auditor UI: a read-only view over the API (openapi.yaml) with an auditor or admin
// token. The token lives in sessionStorage (this tab only) and travels in the Authorization
// header, never in a URL. Everything from the API is shown with textContent; the charts are the
// SVG the server renders for the HTML report too (evidence/audit), parsed as XML, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "proofline.auditor.token";
  const $ = (id) => document.getElementById(id);
  // The query of the search shown (without start) and where its next page starts, or null.
  let lastQuery = "", nextStart = null;
  // Only the latest search, summary and record render: an answer to an earlier request is dropped.
  let searchSeq = 0, summarySeq = 0, recordSeq = 0;
  // The record panel as the page holds it before any record is opened (openRecord copies it).
  let recordBlank = null;

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  async function api(path, as) {
    const resp = await fetch(path, {
      headers: { "Authorization": "Bearer " + token() },
      cache: "no-store", credentials: "omit", redirect: "error", referrerPolicy: "no-referrer",
    });
    if (resp.status === 401) {
      signOut("The token was refused (401): it is unknown or was revoked.");
      throw new Error("unauthenticated");
    }
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { const e = await resp.json(); if (e.message) msg = e.message; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    if (as === "bytes") return new Uint8Array(await resp.arrayBuffer());
    if (as === "text") return resp.text();
    return resp.json();
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function facts(dl, pairs) {
    dl.replaceChildren();
    for (const [k, v] of pairs) { dl.append(el("dt", k), el("dd", v)); }
  }

  // datetime-local (read as UTC) → RFC 3339, or "".
  function rfc3339(id) {
    const v = $(id).value;
    if (!v) return "";
    return (v.length === 16 ? v + ":00" : v) + "Z";
  }

  function signOut(msg) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = msg || "";
  }

  async function signIn(tok) {
    sessionStorage.setItem(TOKEN_KEY, tok);
    try {
      await api("/v1/records?limit=1");
    } catch (e) {
      if (token()) signOut("This token may not read records (" + e.message + "): give an auditor or admin token.");
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    loadSummary();
    search(false);
  }

  // ---- Summary and charts ----

  function showChart(name, svgText) {
    const box = $("chart-box-" + name);
    box.replaceChildren();
    const doc = new DOMParser().parseFromString(svgText || "", "image/svg+xml");
    const root = doc.documentElement;
    if (!root || root.localName !== "svg" || doc.getElementsByTagName("parsererror").length > 0) {
      box.append(el("p", "The chart could not be drawn.", "error"));
      return;
    }
    box.append(document.importNode(root, true));
  }

  async function loadSummary() {
    $("summary-error").textContent = "";
    const from = rfc3339("sum-from"), to = rfc3339("sum-to");
    const q = new URLSearchParams();
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    const seq = ++summarySeq;
    let s;
    try {
      s = await api("/v1/audit/summary?" + q.toString());
    } catch (e) {
      if (seq === summarySeq) $("summary-error").textContent = "Summary: " + e.message;
      return;
    }
    if (seq !== summarySeq) return;
    const st = s.statuses || {};
    facts($("summary-figures"), [
      ["Window", (s.from || "the log's start") + " to " + (s.to || "now")],
      ["Records", s.records + (s.records ? " (log indices " + s.first_index + " to " + s.last_index + ", timed " + s.first + " to " + s.last + ")" : "")],
      ["Attestation verdicts", s.attestations + " on " + s.subjects + " subject(s): " + (st.affirming || 0) + " affirming, " +
        (st.warning || 0) + " warning, " + (st.contraindicated || 0) + " contraindicated"],
      ["Test vendor roots", s.test_roots ? "TEST VENDOR ROOTS: " + s.test_roots + " of " + s.attestations +
        " verdicts (test mode: not genuine hardware, not production evidence; the charts count them and say so)" : "none"],
      ["Changes", (s.changes || []).length + " policy change(s), collateral update(s) and API access change(s)" +
        (s.access_changes ? " (" + (s.access_changes.create || 0) + " token creation(s), " + (s.access_changes.revoke || 0) + " revocation(s))" : "")],
    ]);
    for (const name of ["verdicts", "failures", "tcb", "changes"]) showChart(name, (s.charts || {})[name]);
    let cmd = "proofline audit export --data DATA_DIR";
    if (from) cmd += " --from " + from;
    if (to) cmd += " --to " + to;
    cmd += " --out bundle.tar.gz\nproofline audit report bundle.tar.gz --out report.html [--inventory inventory.yaml]";
    $("export-cmd").textContent = cmd;
  }

  // The bundle is fetched with the token in the Authorization header (never in a URL) and handed
  // to the browser as a download.
  async function downloadExport() {
    const from = rfc3339("sum-from"), to = rfc3339("sum-to");
    const q = new URLSearchParams();
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    $("export-status").textContent = "Exporting…";
    let bytes;
    try {
      bytes = await api("/v1/audit/export?" + q.toString(), "bytes");
    } catch (e) {
      $("export-status").textContent = "Export failed: " + e.message;
      return;
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: "application/gzip" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "proofline-audit-" + new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z") + ".tar.gz";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    $("export-status").textContent = "Downloaded " + bytes.length + " bytes: verify it with proofline audit verify FILE --log-key FILE --keys FILE.";
  }

  // ---- Search ----

  // A search reads the form; "More" asks the next page of the search shown — its query and its
  // next start, kept together when its answer is shown — whatever the form holds since.
  async function search(more) {
    if (more && nextStart === null) return;
    $("search-error").textContent = "";
    let q;
    if (more) {
      q = new URLSearchParams(lastQuery);
      q.set("start", String(nextStart));
    } else {
      q = new URLSearchParams();
      for (const [k, id] of [["subject", "q-subject"], ["kind", "q-kind"], ["status", "q-status"]]) {
        if ($(id).value) q.set(k, $(id).value);
      }
      const from = rfc3339("q-from"), to = rfc3339("q-to");
      if (from) q.set("from", from);
      if (to) q.set("to", to);
      q.set("limit", "50");
      $("more").hidden = true; // until this search's answer says whether there is more
    }
    const seq = ++searchSeq;
    let r;
    try {
      r = await api("/v1/records?" + q.toString());
    } catch (e) {
      if (seq === searchSeq) {
        $("search-error").textContent = "Search: " + e.message;
        $("more").hidden = nextStart === null; // the rows shown are still the last search's
      }
      return;
    }
    if (seq !== searchSeq) return;
    const body = $("results");
    if (!more) {
      body.replaceChildren();
      lastQuery = q.toString();
    }
    body.dataset.query = lastQuery;
    for (const e of r.records) {
      const tr = el("tr");
      tr.dataset.index = String(e.log_index);
      tr.dataset.kind = e.kind;
      for (const v of [e.log_index, e.time, e.kind, e.subject || "", e.platform || "", e.status || "", e.policy || ""]) tr.append(el("td", v));
      const td = el("td");
      const b = el("button", "Open");
      b.type = "button";
      b.className = "open";
      b.addEventListener("click", () => openRecord(e));
      td.append(b);
      tr.append(td);
      body.append(tr);
    }
    if (!more && r.records.length === 0) {
      const tr = el("tr");
      const td = el("td", "No record matches.");
      td.colSpan = 8;
      tr.append(td);
      body.append(tr);
    }
    nextStart = r.next === undefined ? null : r.next;
    $("more").hidden = nextStart === null;
  }

  // ---- One record ----

  function b64(s) { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); }
  function hex(a) { return Array.from(a, (x) => x.toString(16).padStart(2, "0")).join(""); }
  async function sha256(...parts) {
    const n = parts.reduce((t, p) => t + p.length, 0);
    const buf = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { buf.set(p, o); o += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  }

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to from a leaf hash.
  async function rootFromProof(index, size, leafHash, hashes) {
    if (index >= size) return null;
    let fn = index, sn = size - 1, r = leafHash;
    for (const p of hashes) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(Uint8Array.of(1), p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await sha256(Uint8Array.of(1), r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  // The record panel of e, built off-screen from a copy of the page's empty panel: the caller
  // swaps it in whole. part(id) is the panel's element of that id.
  function recordPanel(e) {
    const panel = recordBlank.cloneNode(true);
    panel.hidden = false;
    const part = (id) => panel.querySelector("#" + id);
    part("record-index").textContent = String(e.log_index);
    facts(part("record-facts"), [["Kind", e.kind], ["Time", e.time], ["Subject", e.subject || "—"], ["Platform", e.platform || "—"],
      ["Policy", e.policy || "—"], ["Record SHA-256", e.record_sha256]]);
    part("proof-status").textContent = "checking…";
    return { panel, part };
  }

  // Only the record opened last is shown: its panel shows at once with its heading and index row,
  // the answers fill a copy off-screen, and the copy replaces it once complete, unless another
  // record was opened meanwhile. Every await is followed by that check, so an earlier record's
  // late answers are dropped, never shown under another record's heading.
  async function openRecord(e) {
    const seq = ++recordSeq;
    const current = () => seq === recordSeq;
    $("record").replaceWith(recordPanel(e).panel);
    const { panel, part } = recordPanel(e);
    // The SHA-256 of the record the service's verdict names (GET /v1/results), compared below
    // with the bytes the inclusion proof covers.
    let answered = null;
    try {
      if (e.kind === "attestation") {
        const r = await api("/v1/results/" + encodeURIComponent(e.log_index));
        if (!current()) return;
        answered = r.record_sha256 || "";
        part("record-verdict-source").textContent = "The verifier service's answer for record " + e.log_index +
          " (GET /v1/results), naming the record SHA-256 " + answered + ". This page does not decode the verdict from the record's signed bytes: proofline audit verify does, and re-performs it.";
        const res = r.result || {};
        part("record-verdict").textContent = res.status + (res.test_roots ? " (test vendor roots)" : "") + ", verified at " + res.verified_at +
          " under policy " + (res.policy ? res.policy.id + " " + res.policy.digest : "?");
        part("record-verdict").className = "status-" + res.status;
        for (const f of res.failures || []) part("record-failures").append(el("li", f.code + " (" + f.check + "): " + f.message));
        for (const w of res.warnings || []) part("record-failures").append(el("li", "warning " + w.code + " (" + w.check + "): " + w.message));
        part("record-claims").textContent = JSON.stringify(res.claims === undefined ? null : res.claims, null, 2);
      } else {
        part("record-verdict").textContent = e.kind + (e.status ? ": " + e.status : "") + " (no attestation verdict)";
        part("record-claims").textContent = "—";
      }
    } catch (err) {
      if (!current()) return;
      part("record-error").textContent = "Result: " + err.message;
    }
    let status = "", cls = "bad";
    try {
      const p = await api("/v1/log/proofs/inclusion/" + encodeURIComponent(e.log_index));
      if (!current()) return;
      part("record-proof").textContent = JSON.stringify(p, null, 2);
      const leaf = await api("/v1/records/" + encodeURIComponent(e.log_index), "bytes");
      if (!current()) return;
      const leafHash = await sha256(Uint8Array.of(0), leaf);
      const digest = hex(await sha256(leaf));
      const lines = (p.checkpoint || "").split("\n");
      const root = lines.length > 2 ? hex(b64(lines[2])) : "";
      const got = await rootFromProof(p.log_index, p.tree_size, leafHash, p.hashes.map(b64));
      if (!current()) return;
      if (!got || !root || hex(got) !== root || Number(lines[1]) !== p.tree_size || p.log_index !== e.log_index) {
        status = "The inclusion proof does NOT verify against the checkpoint's root.";
      } else if (digest !== e.record_sha256) {
        // The proof is of other bytes than the record the index lists (and the answer names).
        status = "The record bytes served for index " + e.log_index + " have the SHA-256 " + digest.slice(0, 16) + "…, but the records list names " +
          String(e.record_sha256).slice(0, 16) + "… for it: the proof is not of the record listed, so do not rely on this record's row, proof or verdict.";
      } else if (answered !== null && answered !== digest) {
        status = "The service's answer names a record with SHA-256 " + answered.slice(0, 16) + "…, not these bytes: do not rely on the verdict shown." +
          " (The record bytes served for index " + e.log_index + ", SHA-256 " + digest.slice(0, 16) + "…, are the record the records list names.)";
      } else {
        // What was checked: these bytes, at this index, lead to the root of a checkpoint that came
        // from the same server, its signature unchecked. Not the verdict, and not independent.
        status = "Consistent with the checkpoint this server sent: with the proof, the record bytes served for index " + e.log_index +
          " (SHA-256 " + digest.slice(0, 16) + "…, the record the records list names) lead to the root " + root.slice(0, 16) +
          "… of its checkpoint of " + p.tree_size + " records. That checkpoint's signature is not checked here, so this shows the server's" +
          " answers agree with each other: for independent proof, run proofline audit verify on an export (GET /v1/audit/export), with the" +
          " log key pinned. This concerns those bytes, not the verdict shown above, which is the service's answer for the record.";
        if (answered !== null) status += " The answer names these same bytes by their SHA-256.";
        cls = "consistent";
      }
    } catch (err) {
      if (!current()) return;
      status = "Inclusion proof: " + err.message;
    }
    part("proof-status").textContent = status;
    part("proof-status").className = cls;
    $("record").replaceWith(panel);
  }

  // The inclusion-proof check, for the browser test to feed altered records to.
  window.prooflineInclusion = Object.freeze({ rootFromProof, sha256 });

  document.addEventListener("DOMContentLoaded", () => {
    recordBlank = $("record").cloneNode(true);
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const tok = $("token").value.trim();
      $("token").value = "";
      if (tok) signIn(tok);
    });
    $("logout").addEventListener("click", () => signOut("Signed out: the token was removed from this tab."));
    $("summary-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadSummary(); });
    $("export-download").addEventListener("click", () => downloadExport());
    $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(false); });
    $("more").addEventListener("click", () => search(true));
    if (token()) signIn(token());
  });
})();
