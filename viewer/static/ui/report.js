// The report panel: write the report of a study from a template, with the draft saved as you type;
// sign it with the PIN of your signing certificate; amend a signed report; read the final report.
// Everything goes through the reports API (/api/reports*, /api/report-templates), which checks
// every request on the server: this script only hides what a role may not do. Text from the server
// is always put in with textContent (MP.el). No inline script or style (CSP).
"use strict";
(function () {
  const root = document.getElementById("report");
  if (!root || !window.MP) return;
  const configNode = document.getElementById("report-panel-data");
  const config = configNode ? JSON.parse(configNode.textContent) : {};
  const strings = config.strings || {};
  const data = MP.data || {};
  const el = MP.el;
  const SECTIONS = ["clinical_information", "technique", "findings", "conclusion", "recommendation"];
  const SAVE_AFTER_MS = 2000; // after typing stops
  const RETRY_AFTER_MS = 10000; // a failed save (network) is tried again
  const vietnamese = data.language === "vi";
  const canWrite = config.canWrite === undefined ? ["radiologist", "admin"].includes(data.role) : !!config.canWrite;
  const canSign = config.canSign === undefined ? data.role === "radiologist" : !!config.canSign;
  const accession = String(data.accession || "").trim();
  const studyUid = String(data.study || "");
  const modality = String(data.modality || "").toUpperCase();

  /** A string of this panel ({name} placeholders), else one of the page's. */
  function t(key, values) {
    let text = strings[key] || MP.t(key);
    if (values) for (const [name, value] of Object.entries(values)) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  const state = {
    report: null, // the report as GET/PUT answered it
    templates: null, // every template (both languages), for writers
    signedText: null, // the newest signed version while an amendment is open
    dirty: false, // the textareas differ from what the server has
    saving: null, // the save in flight (a promise)
    again: false, // save once more when the one in flight is done
    timer: null,
    template: null, // a template chosen since the last save: its id goes with the next save
    conflict: false, // someone else saved in between: nothing more is sent until the user reloads
    lost: null, // the text a conflict left unsaved, shown after the reload
  };

  const reportUrl = (suffix) => "/api/reports/" + encodeURIComponent(accession) + (suffix || "");
  const reason = (answer) => (answer.body && answer.body.message) || (answer.status ? "HTTP " + answer.status : t("network"));

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()); }
  /** An ISO time from the server, in the reader's local time: dd/mm/yyyy hh:mm in Vietnamese. */
  function when(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return iso || "";
    const day = vietnamese ? `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()}`
                           : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return day + " " + clock(d);
  }

  // --- the parts of the panel ------------------------------------------------------------------

  function head(report) {
    const parts = [el("h2", { id: "report-title" }, t("title"))];
    if (report) {
      const status = report.version.status;
      parts.push(el("span", { class: "badge " + status, id: "report-status", dataset: { status: status } },
                    t("status." + status)));
      parts.push(el("span", { class: "muted report-version" }, t("version", { n: report.version.number })));
    }
    if (studyUid && !document.body.classList.contains("report-page")) { // beside the images: the report on a second screen
      parts.push(el("a", { class: "report-window", href: "/ui/report/" + encodeURIComponent(studyUid), target: "_blank",
                           rel: "noopener" }, t("newWindow")));
    }
    return el("header", { class: "report-head" }, parts);
  }

  function show(...children) {
    clearTimeout(state.timer);
    root.replaceChildren(...children.flat().filter(Boolean));
    root.setAttribute("aria-busy", "false");
  }

  function message(kind, text) {
    return el("p", { class: kind + " report-message", role: kind === "error" ? "alert" : "status" }, text);
  }

  /** The sections of a version as text (what a reader sees, and a signed version). */
  function sectionsView(version) {
    const out = el("div", { class: "report-text", lang: version.language || null });
    for (const name of SECTIONS) {
      const text = (version.sections || {})[name] || "";
      if (!text.trim()) continue;
      out.append(el("h3", {}, t(name)), el("p", { class: "report-section", dataset: { section: name } }, text));
    }
    const structured = version.structured || {};
    const names = Object.keys(structured);
    if (names.length) {
      const labels = (config.fields || {})[version.template_id] || {};
      out.append(el("h3", {}, t("fields")), el("dl", { class: "report-fields-view" }, names.flatMap((n) => [
        el("dt", {}, labels[n] ? labels[n].label : n),
        el("dd", {}, shownValue(structured[n]) + (labels[n] && labels[n].unit ? " " + labels[n].unit : "")),
      ])));
    }
    return out;
  }

  /** A measurement as the reader writes numbers (2,5 in Vietnamese). */
  function shownValue(value) {
    return typeof value === "number" ? value.toLocaleString(vietnamese ? "vi-VN" : "en-GB", { maximumFractionDigits: 6 })
                                     : String(value);
  }

  function signatureLine(version) {
    const s = version.signature;
    if (!s) return null;
    return el("p", { class: "report-signed" },
      el("span", { id: "report-signer" }, t("signedBy", { name: s.display_name || s.username, time: when(s.signed_at) })),
      s.certificate_number ? el("span", { class: "muted" }, " · " + t("certificate", { number: s.certificate_number })) : null);
  }

  function pdfLink(number) {
    return el("a", { class: "button report-pdf", href: reportUrl("/pdf?version=" + number), target: "_blank",
                     rel: "noopener", type: "application/pdf" }, t("pdf") + " (" + t("version", { n: number }) + ")");
  }

  function outputsView(report) {
    const outputs = report.outputs || [];
    if (!outputs.length) return null;
    if (outputs.some((o) => o.state === "pending")) watchOutputs(report.revision);
    return el("div", { class: "report-outputs", id: "report-outputs" }, el("h3", {}, t("outputs")),
      el("ul", {}, outputs.map((o) =>
        el("li", { class: "output " + o.state, title: o.last_error || null },
          (strings["out." + o.kind] ? t("out." + o.kind) : o.kind) + ": ",
          el("span", { class: "output-state" }, strings["state." + o.state] ? t("state." + o.state) : o.state),
          o.last_error && o.state !== "sent" ? el("span", { class: "muted" }, " — " + o.last_error) : null))));
  }

  function versionsView(report, open) {
    const signed = (report.versions || []).filter((v) => v.status === "final" || v.status === "amended");
    if (report.versions.length < 2 && !open) return null;
    return el("details", { class: "report-versions", open: open || null },
      el("summary", {}, t("versions") + " (" + report.versions.length + ")"),
      el("ul", {}, report.versions.map((v) => el("li", { dataset: { version: v.number } },
        t("version", { n: v.number }) + " · ",
        el("span", { class: "badge " + v.status }, t("status." + v.status)),
        v.signer ? " · " + t("signedBy", { name: v.signer, time: when(v.signed_at) }) : "",
        v.reason ? el("span", { class: "muted" }, " · " + t("amendReason", { reason: v.reason })) : "",
        signed.includes(v) ? [" · ", pdfLink(v.number)] : null))));
  }

  /** Outputs still waiting (the EMR, the SR): look again a few times, so the radiologist sees them arrive. */
  function watchOutputs(revision) {
    if (state.outputsRevision !== revision) {
      state.outputsRevision = revision;
      state.outputsLooks = 0;
    }
    clearTimeout(state.outputsTimer);
    if (++state.outputsLooks > 12) return;
    state.outputsTimer = setTimeout(async () => {
      const answer = await MP.api("GET", reportUrl());
      const block = document.getElementById("report-outputs");
      if (!answer.ok || !block || answer.body.revision !== revision) return;
      const fresh = outputsView(answer.body);
      if (fresh) block.replaceWith(fresh);
    }, 5000);
  }

  // --- reading ---------------------------------------------------------------------------------

  async function load() {
    root.setAttribute("aria-busy", "true");
    if (!studyUid) return show(head(null), message("notice", t("noStudy")));
    if (!accession) return show(head(null), message("notice report-no-accession", t("noAccession")));
    const [answer] = await Promise.all([MP.api("GET", reportUrl()), canWrite ? loadTemplates() : null]);
    state.dirty = false;
    state.conflict = false;
    state.template = null;
    if (answer.status === 404) {
      state.report = null;
      return canWrite ? showStart(null) : show(head(null), message("muted report-none", t("noFinalYet")));
    }
    if (!answer.ok) return show(head(null), message("error", t("loadFailed", { reason: reason(answer) })));
    state.report = answer.body;
    if (!canWrite) return showReader(answer.body);
    return showReport();
  }

  async function loadTemplates() {
    if (state.templates) return;
    const answer = await MP.api("GET", "/api/report-templates");
    state.templates = answer.ok && Array.isArray(answer.body) ? answer.body : [];
  }

  function findTemplate(id) {
    return (state.templates || []).find((x) => x.id === id) || null;
  }

  /** A referrer or a technologist: the newest signed version only, never a draft. */
  async function showReader(report) {
    let shown = report;
    if (!(report.version.status === "final" || report.version.status === "amended")) {
      const signed = report.versions.filter((v) => v.status === "final" || v.status === "amended");
      if (!signed.length) return show(head(null), message("muted report-none", t("noFinalYet")));
      const answer = await MP.api("GET", reportUrl("?version=" + signed[signed.length - 1].number));
      if (!answer.ok) return show(head(null), message("error", t("loadFailed", { reason: reason(answer) })));
      shown = answer.body;
      shown.versions = shown.versions.filter((v) => v.status === "final" || v.status === "amended");
    }
    show(head(shown), signedView(shown, false));
  }

  function signedView(report, writer) {
    const v = report.version;
    const actions = el("div", { class: "report-actions" }, pdfLink(v.number),
      writer ? el("button", { type: "button", id: "report-amend", onclick: openAmend }, t("amend")) : null);
    return el("div", { class: "report-body report-readonly" },
      v.reason ? el("p", { class: "muted report-reason" }, t("amendReason", { reason: v.reason })) : null,
      signatureLine(v), sectionsView(v), actions, outputsView(report), versionsView(report, false));
  }

  // --- writing ---------------------------------------------------------------------------------

  function showReport() {
    const report = state.report;
    const status = report.version.status;
    if (status === "final" || status === "amended") {
      show(head(report), signedView(report, true), lostText()); // signed meanwhile: what was left unsaved stays visible
      state.lost = null;
      return;
    }
    if (status === "cancelled") return showStart(report);
    return showEditor(report);
  }

  function templateSelect(selected) {
    const mine = (state.templates || []).filter((x) => x.language === data.language);
    const others = (state.templates || []).filter((x) => x.language !== data.language);
    const fits = mine.filter((x) => modality && x.modalities.includes(modality));
    const rest = mine.filter((x) => !fits.includes(x));
    const option = (x) => el("option", { value: x.id, selected: x.id === selected || null, lang: x.language }, x.title);
    const group = (label, list) => (list.length ? el("optgroup", { label: label }, list.map(option)) : null);
    return el("select", { id: "report-template", name: "template" },
      el("option", { value: "" }, t("chooseTemplate")),
      group(t("templatesFor", { modality: modality || "?" }), fits), group(t("otherTemplates"), rest),
      group(t("otherLanguage"), others));
  }

  /** No report yet (or the last draft was cancelled): choose a template, or start empty. */
  function showStart(report) {
    const select = templateSelect("");
    const start = async (templateId) => {
      select.disabled = true;
      const body = { study_instance_uid: studyUid };
      if (templateId) body.template_id = templateId;
      else body.language = data.language === "en" ? "en" : "vi";
      const answer = await MP.api("POST", "/api/reports", body);
      if (!answer.ok) {
        select.disabled = false;
        status.replaceChildren(message("error", t("failed", { reason: reason(answer) })));
        return;
      }
      state.report = answer.body;
      showReport();
      const first = root.querySelector("textarea[data-section=findings]");
      if (first) first.focus();
    };
    select.addEventListener("change", () => { if (select.value) start(select.value); });
    const status = el("div", { class: "report-start-status" });
    show(head(report),
      message("muted report-none", t(report ? "wasCancelled" : "noReportYet")),
      el("div", { class: "report-template" }, el("label", { for: "report-template" }, t("template")), select),
      el("p", {}, el("button", { type: "button", id: "report-start-empty", onclick: () => start("") }, t("startEmpty"))),
      status, report ? versionsView(report, false) : null);
  }

  function showEditor(report) {
    const v = report.version;
    const select = templateSelect(v.template_id);
    select.addEventListener("change", () => chooseTemplate(select));
    const form = el("form", { class: "report-form", novalidate: true, lang: v.language || null });
    form.addEventListener("submit", (e) => { e.preventDefault(); save(); });
    for (const name of SECTIONS) {
      const id = "report-" + name.replace("_", "-");
      const area = el("textarea", { id: id, name: name, dataset: { section: name }, rows: name === "findings" ? 8 : 3,
                                    spellcheck: "true" });
      area.value = (v.sections || {})[name] || "";
      form.append(el("div", { class: "report-field " + name }, el("label", { for: id }, t(name)), area));
    }
    form.append(fieldInputs(findTemplate(v.template_id), v.structured || {}));
    form.addEventListener("input", edited);
    form.addEventListener("focusout", (e) => { if (state.dirty && e.target.matches("textarea, input")) save(); });
    const actions = el("div", { class: "report-actions" },
      canSign ? el("button", { type: "button", class: "primary", id: "report-sign", onclick: openSign }, t("sign")) : null,
      el("button", { type: "button", class: "link", id: "report-cancel", onclick: openCancel }, t("cancelDraft")));
    const saved = el("p", { class: "report-save muted", id: "report-save", role: "status", "aria-live": "polite" },
      t("draftBy", { name: v.author_name || v.author, time: when(v.updated_at) }));
    const signedBefore = report.versions.some((x) => x.status === "final" || x.status === "amended");
    show(head(report),
      v.reason ? el("p", { class: "notice report-reason" }, t("amendReason", { reason: v.reason })) : null,
      el("div", { id: "report-alert" }),
      el("div", { class: "report-template" }, el("label", { for: "report-template" }, t("template")), select),
      form, el("div", { class: "report-bar" }, saved, actions), lostText(),
      signedBefore ? el("div", { id: "report-previous" }) : null,
      versionsView(report, false));
    state.lost = null;
    if (signedBefore) showPrevious(report);
  }

  /** Inputs for the template's structured fields (a measurement, a score). */
  function fieldInputs(template, values) {
    const fields = (template && template.fields) || [];
    if (!fields.length) return null;
    return el("fieldset", { class: "report-structured" }, el("legend", {}, t("fields")), fields.map((f) => {
      const id = "report-field-" + f.name;
      const number = f.type === "number";
      const input = el("input", { id: id, type: number ? "number" : "text", step: number ? "any" : null,
                                  dataset: { field: f.name, type: f.type }, inputmode: number ? "decimal" : null });
      if (values[f.name] !== undefined && values[f.name] !== null) input.value = String(values[f.name]);
      const label = f.label + (f.unit ? " (" + f.unit + ")" : "");
      return el("div", { class: "report-field-input" }, el("label", { for: id }, label), input);
    }));
  }

  /** The newest signed version, beside an open amendment: what is in force until the amendment is signed. */
  async function showPrevious(report) {
    const signed = report.versions.filter((x) => x.status === "final" || x.status === "amended");
    const number = signed[signed.length - 1].number;
    const answer = await MP.api("GET", reportUrl("?version=" + number));
    const slot = document.getElementById("report-previous");
    if (!slot || !answer.ok) return;
    const v = answer.body.version;
    slot.replaceChildren(el("details", { class: "report-previous", open: true },
      el("summary", {}, t("previous", { n: v.number }), " ",
        el("span", { class: "badge " + v.status }, t("status." + v.status))),
      signatureLine(v), sectionsView(v), el("p", {}, pdfLink(v.number))));
  }

  function lostText() {
    const lost = state.lost;
    if (!lost) return null;
    const changed = SECTIONS.filter((n) => (lost[n] || "") !== ((state.report.version.sections || {})[n] || ""));
    if (!changed.length) return null;
    return el("details", { class: "report-lost", open: true }, el("summary", {}, t("yourText")),
      changed.flatMap((n) => [el("h3", {}, t(n)), el("p", { class: "report-section" }, lost[n] || "")]));
  }

  function textareas() { return Array.from(root.querySelectorAll("textarea[data-section]")); }

  function collect() {
    const sections = {};
    for (const area of textareas()) sections[area.dataset.section] = area.value;
    const structured = {};
    for (const input of root.querySelectorAll("input[data-field]")) {
      const raw = input.value.trim();
      if (!raw) continue;
      structured[input.dataset.field] = input.dataset.type === "number" ? Number(raw.replace(",", ".")) : raw;
    }
    const body = { sections: sections };
    if (root.querySelector("input[data-field]") || state.template) body.structured = structured;
    if (state.template) {
      body.template_id = state.template.id;
      body.language = state.template.language;
    }
    return body;
  }

  function setSaveStatus(kind, text) {
    const line = document.getElementById("report-save");
    if (!line) return;
    line.className = "report-save " + kind;
    line.dataset.state = kind;
    line.textContent = text;
  }

  function edited() {
    if (state.conflict) return;
    state.dirty = true;
    setSaveStatus("muted", t("unsaved"));
    clearTimeout(state.timer);
    state.timer = setTimeout(save, SAVE_AFTER_MS);
  }

  function chooseTemplate(select) {
    const template = findTemplate(select.value);
    if (!template) return;
    const written = textareas().some((a) => a.value.trim());
    if (written && !window.confirm(t("replaceText", { title: template.title }))) {
      select.value = state.template ? state.template.id : state.report.version.template_id || "";
      return;
    }
    state.template = template;
    for (const area of textareas()) area.value = template.sections[area.dataset.section] || "";
    const fields = root.querySelector(".report-structured");
    const replacement = fieldInputs(template, {});
    if (fields) fields.remove();
    if (replacement) root.querySelector(".report-form").append(replacement);
    edited();
    save();
  }

  /** Send the draft now (autosave); resolves true when the server has everything typed so far. */
  async function save() {
    clearTimeout(state.timer);
    state.timer = null;
    if (state.conflict) return false;
    if (state.saving) {
      state.again = true;
      await state.saving;
      return save();
    }
    if (!state.dirty) return true;
    const body = collect();
    body.revision = state.report.revision;
    const template = state.template;
    state.dirty = false;
    setSaveStatus("muted", t("saving"));
    state.saving = MP.api("PUT", reportUrl(), body);
    let answer;
    try {
      answer = await state.saving;
    } finally {
      state.saving = null;
    }
    if (answer.ok) {
      state.report = answer.body;
      if (state.template === template) state.template = null;
      if (!state.dirty) setSaveStatus("ok-text", t("savedAt", { time: clock(new Date()) }));
    } else if (answer.status === 409) {
      conflict();
      return false;
    } else {
      state.dirty = true;
      setSaveStatus("error-text", t("notSaved", { reason: reason(answer) }));
      if (answer.status === 0 || answer.status >= 500) state.timer = setTimeout(save, RETRY_AFTER_MS);
      return false;
    }
    if (state.again || state.dirty) {
      state.again = false;
      if (state.dirty) return save();
    }
    return true;
  }

  /** Someone else saved in between (409): nothing of ours overwrites theirs; offer to reload. */
  function conflict() {
    state.conflict = true;
    clearTimeout(state.timer);
    const mine = collect().sections;
    for (const area of textareas()) area.readOnly = true;
    for (const button of root.querySelectorAll(".report-actions button")) button.disabled = true;
    setSaveStatus("error-text", t("notSaved", { reason: t("changedElsewhere") }));
    const reload = el("button", { type: "button", class: "primary", id: "report-reload", onclick: async () => {
      state.lost = mine;
      await load();
    } }, t("reload"));
    const alert = document.getElementById("report-alert");
    if (alert) {
      alert.replaceChildren(el("div", { class: "error report-conflict", role: "alert" }, el("p", {}, t("conflict")), reload));
    }
    reload.focus();
  }

  /** Whether the report moved on since we read it (a 409 is also "no signing certificate", "already signed"...). */
  async function changedElsewhere() {
    const answer = await MP.api("GET", reportUrl());
    return !answer.ok || answer.body.revision !== state.report.revision;
  }

  // --- dialogs: sign, amend, cancel ------------------------------------------------------------------

  /** A modal dialog (Esc closes it); `fill` adds the fields, `submit` runs on Enter or the main button. */
  function dialog(id, title, main, fill, submit) {
    const error = el("p", { class: "error dialog-error hidden", role: "alert" });
    const ok = el("button", { type: "submit", class: "primary" }, main);
    const form = el("form", { method: "dialog", novalidate: true }, el("h2", {}, title), fill(), error,
      el("div", { class: "dialog-buttons" }, ok,
        el("button", { type: "button", class: "dialog-back", onclick: () => box.close() }, t("back"))));
    const box = el("dialog", { id: id, class: "report-dialog", "aria-labelledby": id + "-title" }, form);
    form.querySelector("h2").id = id + "-title";
    const fail = (text) => {
      error.textContent = text;
      error.classList.toggle("hidden", !text);
    };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (ok.disabled) return;
      ok.disabled = true;
      try {
        if (await submit(fail, ok)) box.close();
      } finally {
        ok.disabled = false;
      }
    });
    box.addEventListener("close", () => { box.remove(); });
    root.append(box);
    box.showModal();
    const first = form.querySelector("input, textarea");
    if (first) first.focus();
    return box;
  }

  async function openSign() {
    if (!(await save())) return;
    const conclusion = ((state.report.version.sections || {}).conclusion || "").trim();
    if (!conclusion) {
      const alert = document.getElementById("report-alert");
      if (alert) alert.replaceChildren(message("error", t("needConclusion")));
      const area = document.getElementById("report-conclusion");
      if (area) area.focus();
      return;
    }
    let pin;
    dialog("report-sign-dialog", t("signTitle"), t("signNow"), () => {
      pin = el("input", { id: "report-pin", type: "password", autocomplete: "off", name: "pin", required: true,
                          "aria-describedby": "report-pin-hint" });
      return [
        el("p", {}, t("signConclusion")),
        el("blockquote", { class: "report-conclusion", id: "report-sign-conclusion" }, conclusion),
        el("label", { for: "report-pin" }, t("pin")), pin,
        el("p", { class: "muted small", id: "report-pin-hint" }, t("pinHint")),
      ];
    }, async (fail, button) => {
      if (!pin.value) { fail(t("pinEmpty")); pin.focus(); return false; }
      fail("");
      const label = button.textContent;
      button.textContent = t("signing");
      const answer = await MP.api("POST", reportUrl("/sign"), { pin: pin.value, revision: state.report.revision });
      button.textContent = label;
      pin.value = "";
      if (answer.ok) {
        state.report = answer.body;
        showReport();
        const link = root.querySelector(".report-pdf");
        if (link) link.focus();
        return true;
      }
      if (answer.status === 429) {
        const seconds = parseInt(answer.headers.get("Retry-After") || "60", 10) || 60;
        fail(t("locked", { minutes: Math.ceil(seconds / 60), time: clock(new Date(Date.now() + seconds * 1000)) }));
      } else if (answer.status === 403 && /PIN/.test(reason(answer))) {
        fail(t("wrongPin"));
      } else if (answer.status === 409 && (await changedElsewhere())) {
        fail(t("conflict"));
      } else if (answer.status === 409 && /no signing certificate/.test(reason(answer))) {
        fail(t("noCertificate"));
      } else {
        fail(t("signFailed", { reason: reason(answer) }));
      }
      pin.focus();
      return false;
    });
  }

  function openAmend() {
    let text;
    dialog("report-amend-dialog", t("amendTitle"), t("amendNow"), () => {
      text = el("textarea", { id: "report-amend-reason", rows: 3, maxlength: 1000, required: true });
      return [el("p", { class: "muted" }, t("amendHelp")), el("label", { for: "report-amend-reason" }, t("reason")), text];
    }, async (fail) => {
      if (!text.value.trim()) { fail(t("reasonNeeded")); text.focus(); return false; }
      const answer = await MP.api("POST", reportUrl("/amend"), { reason: text.value.trim(), revision: state.report.revision });
      if (!answer.ok) { fail(t("failed", { reason: reason(answer) })); return false; }
      state.report = answer.body;
      showReport();
      const area = document.getElementById("report-conclusion");
      if (area) area.focus();
      return true;
    });
  }

  async function openCancel() {
    if (state.saving) await state.saving;
    let text;
    dialog("report-cancel-dialog", t("cancelTitle"), t("cancelNow"), () => {
      text = el("textarea", { id: "report-cancel-reason", rows: 2, maxlength: 1000 });
      return [el("p", { class: "muted" }, t("cancelHelp")),
              el("label", { for: "report-cancel-reason" }, t("reasonOptional")), text];
    }, async (fail) => {
      clearTimeout(state.timer);
      const answer = await MP.api("POST", reportUrl("/cancel"), { reason: text.value.trim(), revision: state.report.revision });
      if (!answer.ok) { fail(t("failed", { reason: reason(answer) })); return false; }
      state.report = answer.body;
      state.dirty = false;
      showReport();
      return true;
    });
  }

  // Keys typed in the panel are the panel's (the viewer's shortcuts must not scroll slices); Ctrl+S saves now.
  root.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s" && root.querySelector(".report-form")) {
      e.preventDefault();
      save();
    }
    if (e.target instanceof HTMLElement && e.target.matches("textarea, input, select")) e.stopPropagation();
  });
  // Back to this window (the report may be open in another one too): show what changed meanwhile.
  window.addEventListener("focus", async () => {
    if (!state.report || state.dirty || state.saving || state.conflict || root.querySelector("dialog[open]")) return;
    const answer = await MP.api("GET", reportUrl());
    if (answer.ok && answer.body.revision !== state.report.revision && !state.dirty && !state.saving) load();
  });
  // Leaving with text the server does not have yet: the browser asks first.
  window.addEventListener("beforeunload", (e) => {
    if (state.dirty || state.saving) {
      save();
      e.preventDefault();
      e.returnValue = "";
    }
  });

  load();
})();
