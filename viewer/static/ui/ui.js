// minipacs staff UI: what every page's script uses. No framework, no inline script (CSP).
// Text from the server is always put in with textContent (MP.el), never innerHTML: a patient named
// "<script>" is shown as text.
"use strict";
(function () {
  const dataNode = document.getElementById("page-data");
  const data = dataNode ? JSON.parse(dataNode.textContent) : {};
  const MP = (window.MP = { data: data });

  /** A translated string the page was given (page-data "strings"), or the key itself. */
  MP.t = function (key, values) {
    let text = (data.strings && data.strings[key]) || key;
    if (values) for (const [name, value] of Object.entries(values)) text = text.split("{" + name + "}").join(String(value));
    return text;
  };

  /** document.createElement with attributes and children (strings become text nodes). */
  MP.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  /** Show a short message in the corner. */
  MP.toast = function (message, isError) {
    const node = MP.el("div", { class: "toast" + (isError ? " error" : ""), role: isError ? "alert" : "status" }, message);
    document.body.append(node);
    setTimeout(() => node.remove(), isError ? 8000 : 2500);
  };

  function toLogin() {
    location.assign("/login-page?next=" + encodeURIComponent(location.pathname + location.search));
  }

  /**
   * A JSON call to the server with the session's CSRF token. Resolves to {ok, status, body, headers};
   * a 401 (session over) goes to the login page; a network failure resolves with status 0.
   */
  MP.api = async function (method, url, body, headers) {
    const init = { method: method, credentials: "same-origin", headers: Object.assign({ Accept: "application/json" }, headers || {}) };
    if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = data.csrf || "";
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      return { ok: false, status: 0, body: { message: MP.t("network") }, headers: new Headers() };
    }
    if (response.status === 401) {
      MP.toast(MP.t("expired"), true);
      setTimeout(toLogin, 1200);
    }
    let parsed = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { parsed = await response.json(); } catch (e) { parsed = null; }
    }
    return { ok: response.ok, status: response.status, body: parsed, headers: response.headers };
  };

  /** DICOM date YYYYMMDD as the language writes it (dd/mm/yyyy in Vietnamese). */
  MP.date = function (text) {
    if (!text || !/^\d{8}$/.test(text)) return text || "";
    return data.language === "vi" ? `${text.slice(6, 8)}/${text.slice(4, 6)}/${text.slice(0, 4)}`
                                  : `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6, 8)}`;
  };

  /** DICOM PN "Family^Given^Middle" as people write it in Vietnam: family, middle, given. */
  MP.person = function (value) {
    const parts = String(value || "").split("=")[0].split("^").concat(["", "", "", "", ""]);
    return [parts[3], parts[0], parts[2], parts[1], parts[4]].filter((p) => p && p.trim()).join(" ");
  };

  // Forms and buttons that ask first: <form data-confirm="...">.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
})();
