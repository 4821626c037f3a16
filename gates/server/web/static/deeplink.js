// mlgate web UI: the links the MLflow client prints after a run or a registration
// (<tracking uri>/#/experiments/<id>/runs/<id>, #/models/<name>/versions/<v>) open the same
// object on mlgate's own pages. The hash never reaches the server, so "/" redirects here with
// it intact and this script maps it. On the sign-in page it becomes the page to go to next.
(function () {
  "use strict";
  var ID = /^[A-Za-z0-9_-]{1,64}$/;

  function segment(text) {
    try {
      return decodeURIComponent(text);
    } catch (e) {
      return null;
    }
  }

  function target(hash) {
    var path = hash.replace(/^#\/?/, "").split("?")[0].replace(/\/+$/, "");
    var parts = path.split("/").map(segment);
    if (parts.indexOf(null) >= 0 || parts[0] === "") return null;
    if (parts[0] === "experiments") {
      if (parts.length === 1) return "/experiments";
      if (!ID.test(parts[1])) return null;
      if (parts[2] === "runs" && parts.length >= 4 && ID.test(parts[3])) return "/runs/" + parts[3];
      return "/experiments/" + parts[1];
    }
    if (parts[0] === "models") {
      if (parts.length === 1) return "/models";
      var model = "/models/" + encodeURIComponent(parts[1]);
      if (parts[2] === "versions" && parts.length >= 4 && /^[0-9]{1,19}$/.test(parts[3])) {
        return model + "/versions/" + parts[3];
      }
      return model;
    }
    return null;
  }

  var next = window.location.hash ? target(window.location.hash) : null;
  if (!next) return;
  var field = document.querySelector('form input[name="next"]');
  if (window.location.pathname === "/login" && field) {
    field.value = next;
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    return;
  }
  window.location.replace(next);
})();
