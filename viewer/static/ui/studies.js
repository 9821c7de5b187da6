// The study list: niceties only (the page works without script). A click anywhere on a row opens the
// study; choosing a status or modality searches at once.
"use strict";
(function () {
  const table = document.getElementById("study-list");
  if (table) {
    table.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input, select")) return; // a real link does its own thing
      if (window.getSelection && String(window.getSelection())) return; // selecting text to copy it
      const row = event.target.closest("tr[data-href]");
      if (!row) return;
      if (event.ctrlKey || event.metaKey) window.open(row.dataset.href, "_blank", "noopener");
      else location.assign(row.dataset.href);
    });
  }
  const form = document.getElementById("study-filters");
  if (form) {
    for (const id of ["f-status", "f-modality"]) {
      const select = document.getElementById(id);
      if (select) select.addEventListener("change", () => form.requestSubmit());
    }
  }
})();
