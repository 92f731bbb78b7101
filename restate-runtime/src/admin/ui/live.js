// Live pages: every few seconds, while the tab is visible and no field has the focus, the
// page is fetched again and its main part replaced (same origin, same cookie).
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
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (fresh) main.innerHTML = fresh.innerHTML;
      })
      .catch(function () {});
  }, every);
})();
