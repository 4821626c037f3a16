// mlgate web UI: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  // Forms with data-confirm ask before submitting (deleting, redelivering).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
  // "Select all" checkboxes toggle the checkboxes named by data-select-all.
  document.querySelectorAll("input[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      var name = box.getAttribute("data-select-all");
      document.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (other) {
        other.checked = box.checked;
      });
    });
  });
})();
