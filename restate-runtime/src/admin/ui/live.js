// Live pages: every few seconds, while the tab is visible and no field has the focus, the
// page is fetched again and its live part replaced (same origin, same cookie): the results,
// not a form someone may be filling in.
(function () {
  var main = document.getElementById("main");
  var every = main && Number(main.dataset.live);
  if (!every) return;
  setInterval(function () {
    if (document.visibilityState !== "visible") return;
    var focused = document.activeElement;
    if (focused && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName)) return;
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var part = document.getElementById("live");
        var freshPart = fresh.getElementById("live");
        if (part && freshPart) {
          part.innerHTML = freshPart.innerHTML;
        } else if (fresh.getElementById("main")) {
          main.innerHTML = fresh.getElementById("main").innerHTML;
        }
      })
      .catch(function () {});
  }, every);
})();
