// Live pages: every few seconds, while the tab is visible and no field has the focus, the
// page is fetched again and its live part replaced (same origin, same cookie): the results,
// not a form someone may be filling in. One fetch at a time: a page slow to build is not
// asked for again before it came.
(function () {
  var main = document.getElementById("main");
  var every = main && Number(main.dataset.live);
  if (!every) return;
  var fetching = false;
  setInterval(function () {
    if (fetching || document.visibilityState !== "visible") return;
    var focused = document.activeElement;
    if (focused && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName)) return;
    fetching = true;
    // A fetch that never settles would stop the refresh: given up after a minute.
    var abort = new AbortController();
    var giveUp = setTimeout(function () { abort.abort(); }, 60000);
    fetch(location.href, { credentials: "same-origin", signal: abort.signal })
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
      .catch(function () {})
      .then(function () { clearTimeout(giveUp); fetching = false; });
  }, every);
})();
