/* The administrator's pages: sizes of the meter and the per-day bars (no style attributes under the CSP), copy a new token. */
(function () {
  "use strict";
  document.querySelectorAll("[data-width]").forEach(function (el) {
    el.style.width = Math.max(0, Math.min(100, parseFloat(el.dataset.width) || 0)) + "%";
  });
  document.querySelectorAll("[data-height]").forEach(function (el) {
    var h = Math.max(0, Math.min(100, parseFloat(el.dataset.height) || 0));
    el.style.height = (h > 0 ? Math.max(h, 2) : 0) + "%";
  });
  var copy = document.querySelector("button[data-copy]");
  if (copy) {
    copy.addEventListener("click", function () {
      var secret = document.getElementById(copy.dataset.copy);
      var range = document.createRange();
      range.selectNodeContents(secret);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var done = function () { MP.toast(MP.t("copied")); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(secret.textContent).then(done, function () { MP.toast(MP.t("copyByHand"), true); });
      } else {
        MP.toast(MP.t("copyByHand"));  // the token is selected: Ctrl+C
      }
    });
  }
})();
