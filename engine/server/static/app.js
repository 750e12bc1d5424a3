// tansaku pages: a little plain JavaScript over the JSON API (no build step).
"use strict";
const tansaku = (() => {
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  };
  async function api(url, options = {}) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }
  function showError(node, error) {
    node.textContent = error ? String(error.message || error) : "";
    node.hidden = !error;
  }

  // ---- gallery list and jobs
  function indexPage() {
    document.querySelectorAll("[data-delete]").forEach((button) => {
      button.addEventListener("click", async () => {
        const name = button.dataset.delete;
        if (!confirm(`Delete gallery "${name}"? Its index goes; the image files stay.`)) return;
        try { await api(`/api/galleries/${encodeURIComponent(name)}`, { method: "DELETE" }); location.reload(); }
        catch (e) { showError($("#job-error"), e); }
      });
    });
    const form = $("#job-form");
    if (form) form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      try {
        showError($("#job-error"), null);
        await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
        pollJobs();
      } catch (e) { showError($("#job-error"), e); }
    });
    pollJobs();
  }
  let polling = null;
  async function pollJobs() {
    clearTimeout(polling);
    let jobs = [];
    try { jobs = (await api("/api/jobs")).jobs; } catch (e) { showError($("#job-error"), e); return; }
    const box = $("#jobs");
    box.replaceChildren(...jobs.map(renderJob));
    if (jobs.some((j) => j.status === "running" || j.status === "queued")) polling = setTimeout(pollJobs, 1000);
  }
  function renderJob(job) {
    const pct = job.progress ?? 0;
    const bar = el("progress", { max: "100", value: String(pct) });
    const label = job.total ? `${job.done} / ${job.total} images` : job.status;
    const head = el("div", { class: "job-head" },
      el("strong", { text: `#${job.id} ${job.gallery}` }), ` ${job.folder} · `,
      el("span", { class: `status ${job.status}`, text: job.status }), ` · ${label}`);
    const node = el("div", { class: "job", "data-job": String(job.id) }, head, bar);
    if (job.status === "running" || job.status === "queued") {
      const cancel = el("button", { class: "link danger", text: "cancel" });
      cancel.addEventListener("click", () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).then(pollJobs));
      head.append(" ", cancel);
    }
    if (job.error) node.append(el("p", { class: "error", text: job.error }));
    if (job.failures.length) {
      const list = el("ul", { class: "failures" }, ...job.failures.map((f) => el("li", { text: `${f.path}: ${f.reason}` })));
      node.append(el("details", {}, el("summary", { text: `${job.failures.length} failed` }), list));
    }
    return node;
  }

  // ---- query page
  function galleryPage() {
    const form = $("#query-form"), drop = $("#drop"), input = $("#file");
    const attrField = $("#query-attr");  // attribute words added to an image query (galleries with attributes)
    const gallery = form.dataset.gallery;
    let rerun = null;  // the last query (image or attributes), run again when a setting changes
    let image = null;  // the last query image, run again when the words added to it change
    const run = (file) => { if (file) { image = file; rerun = () => query(gallery, form, file); rerun(); } };
    input.addEventListener("change", () => run(input.files[0]));
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
    drop.addEventListener("drop", (e) => run(e.dataTransfer.files[0]));
    form.addEventListener("change", (e) => {
      if (e.target === input) return;
      if (e.target === attrField) run(image); else if (rerun) rerun();
    });
    form.addEventListener("submit", (e) => e.preventDefault());
    $("#match").addEventListener("click", (e) => { if (e.target.id === "match") e.target.close(); });
    const list = $("#attr-words");
    if (list) suggestWords(document.querySelectorAll("input[list=attr-words]"), list);
    const attrForm = $("#attr-form");
    if (attrForm) attributeSearch(gallery, form, attrForm, (search) => { rerun = search; });
  }
  // attribute words (the search box, and those added to an image query): the shared datalist
  // offers the gallery's words and names after what is typed so far, up to the last comma
  function suggestWords(inputs, list) {
    const words = [...list.options].map((o) => o.value);
    const offer = (input) => {
      const typed = input.value.match(/^(.*,\s*)/);
      const prefix = typed ? typed[1] : "";
      list.replaceChildren(...words.map((w) => el("option", { value: prefix + w })));
    };
    for (const input of inputs) ["input", "focus"].forEach((t) => input.addEventListener(t, () => offer(input)));
  }
  // search by attribute words alone
  function attributeSearch(gallery, form, attrForm, remember) {
    const input = attrForm.elements.q;
    attrForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const words = input.value;
      remember(() => search(words));
      search(words);
    });
    function search(words) {
      const params = new URLSearchParams({ q: words, top_k: form.elements.top_k.value });
      $("#query-preview").hidden = true;
      return show(() => api(`/api/galleries/${encodeURIComponent(gallery)}/attributes/query?${params}`),
        (result, ms) => `${result.results.length} people in ${ms} ms for: ${words}`);
    }
  }
  // Run one query and show its answer (or its error) with `describe(result, ms)` as the status.
  // Only the latest query's answer is shown: an earlier one still on its way (a setting changed
  // while it ran) must not overwrite it.
  let latest = 0;
  async function show(request, describe) {
    showError($("#query-error"), null);
    $("#query-status").textContent = "searching…";
    const started = performance.now();
    const ticket = ++latest;
    try {
      const result = await request();
      if (ticket !== latest) return;
      $("#query-status").textContent = describe(result, Math.round(performance.now() - started));
      renderResults(result);
    } catch (e) {
      if (ticket !== latest) return;
      $("#query-status").textContent = "";
      $("#results").replaceChildren();
      showError($("#query-error"), e);
    }
  }
  // why a person matched an attribute query: each asked-for attribute's probability
  const why = (r) => Object.entries(r.matched_attributes || {}).map(([name, p]) => `${name} ${Math.round(100 * p)}%`);
  function query(gallery, form, file) {
    const data = new FormData();
    data.append("file", file);
    for (const name of ["top_k", "shortlist", "mode"]) data.append(name, form.elements[name].value);
    data.append("rerank", form.elements.rerank.checked ? "true" : "false");
    const tracklets = form.elements.tracklets && form.elements.tracklets.checked;
    if (tracklets) data.append("tracklets", "true");
    const words = $("#query-attr") ? $("#query-attr").value.trim() : "";
    if (words) data.append("attributes", words);
    const preview = $("#query-preview");
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    return show(() => api(`/api/galleries/${encodeURIComponent(gallery)}/query`, { method: "POST", body: data }),
      (result, ms) => `${result.results.length} ${tracklets ? "tracklets" : "results"} in ${ms} ms for ${file.name}` + (words ? ` with: ${words}` : ""));
  }
  function renderResults(result) {
    const cards = result.results.map((r) => {
      const facts = [`score ${r.score.toFixed(3)}`];
      if (r.inliers !== null && r.inliers !== undefined) facts.push(`${r.inliers} inliers`);
      if (r.person_id !== undefined && r.person_id !== null) facts.push(`person ${r.person_id}, cam ${r.camera_id}`);
      const card = el("button", { class: "card", type: "button", "data-rank": String(r.rank), title: "show the match" },
        el("img", { src: r.thumbnail_url, alt: r.relative_path || r.path, loading: "lazy" }),
        el("span", { class: "rank", text: `#${r.rank}` }),
        el("span", { class: "name", text: r.relative_path || r.path, title: r.path }),
        el("span", { class: "facts", text: facts.join(" · ") }));
      if (r.matched_attributes) card.append(el("span", { class: "why", text: why(r).join(" · ") }));
      if (r.frame_urls) {  // a tracklet: how many images it holds, and a strip of them
        facts.push(`${r.frame_urls.length} frames`);
        card.querySelector(".facts").textContent = facts.join(" · ");
        card.append(el("span", { class: "frames" },
          ...r.frame_urls.slice(0, 8).map((src) => el("img", { src, alt: "", loading: "lazy" }))));
      }
      card.addEventListener("click", () => openMatch(r, result.match_view));
      return card;
    });
    $("#results").replaceChildren(...cards);
  }
  function openMatch(r, view) {
    const dialog = $("#match");
    $("#match-title").replaceChildren(el("strong", { text: `#${r.rank} ${r.relative_path || r.path}` }),
      ` · score ${r.score.toFixed(3)} · `, el("a", { href: r.image_url, target: "_blank", text: "original" }));
    const img = $("#match-img"), box = $("#match-box");
    box.hidden = true;
    // an attribute query has no query image: the photo itself, the person's box drawn over it
    img.onload = () => {
      if (r.match_url || !r.box) return;
      const [x, y, w, h] = r.box, sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
      Object.assign(box.style, { left: `${img.offsetLeft + x * sx}px`, top: `${img.offsetTop + y * sy}px`,
        width: `${w * sx}px`, height: `${h * sy}px` });
      box.hidden = false;
    };
    const attributes = r.matched_attributes ? ` Attributes asked for: ${why(r).join(", ")}.` : "";
    $("#match-note").textContent = !r.match_url ? `Why it matched: ${why(r).join(", ")}.`
      : (view === "heat-maps"
        ? "Where the re-ID network looked: the query, its heat map, the result's heat map, the result."
        : "Lines join the local features that geometric verification kept (inliers).") + attributes;
    img.src = r.match_url || r.image_url;
    dialog.showModal();
  }
  return { indexPage, galleryPage };
})();
