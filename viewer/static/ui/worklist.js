/* The technologist's pages: filters apply on change; the walk-in form's procedure list follows the modality. */
"use strict";
(function () {
  // Worklist filters: a changed select shows its list at once (the Show button stays for keyboards).
  document.querySelectorAll("form.wl-filters select.autosubmit, form.wl-filters input[type=date]").forEach(function (field) {
    field.addEventListener("change", function () { if (field.form) field.form.requestSubmit(); });
  });

  // The worklist and the unmatched list reload themselves (new orders, new studies) while nobody is typing.
  var refreshed = document.querySelector("[data-refresh]");
  if (refreshed) {
    var seconds = Math.max(15, parseInt(refreshed.getAttribute("data-refresh"), 10) || 60);
    setInterval(function () {
      var active = document.activeElement;
      var busy = document.hidden || document.querySelector("details[open]") ||
        (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) ||
        Array.prototype.some.call(document.querySelectorAll("main input[type=text]"), function (input) {
          return input.value !== input.defaultValue;
        });
      if (!busy) location.reload();
    }, seconds * 1000);
  }

  // Walk-in: only the procedures of the chosen modality; choosing a procedure chooses its modality.
  var modality = document.getElementById("modality");
  var procedure = document.getElementById("procedure_code");
  if (!modality || !procedure) return;
  function filterProcedures() {
    var wanted = modality.value;
    Array.prototype.forEach.call(procedure.options, function (option) {
      var own = option.getAttribute("data-modality");
      option.hidden = Boolean(wanted && own && own !== wanted);
    });
    var chosen = procedure.selectedOptions[0];
    if (chosen && chosen.hidden) procedure.value = "";
  }
  modality.addEventListener("change", filterProcedures);
  procedure.addEventListener("change", function () {
    var chosen = procedure.selectedOptions[0];
    var own = chosen ? chosen.getAttribute("data-modality") : "";
    if (own && modality.value !== own) { modality.value = own; filterProcedures(); }
  });
  filterProcedures();
})();
