// Cairn web UI: the only script. Pages work without it; it warns a minute before the
// session's idle timeout ends the session, and says so when it has.
(function () {
  "use strict";
  var idle = parseInt(document.body.getAttribute("data-idle-secs") || "0", 10);
  var box = document.getElementById("session-notice");
  if (!idle || !box) { return; }
  var warnAt = Math.max(idle - 60, 0) * 1000;
  setTimeout(function () {
    box.hidden = false;
    box.textContent = "Your session ends in about a minute without activity. Open or reload a page to keep it.";
  }, warnAt);
  setTimeout(function () {
    box.hidden = false;
    box.className = "error";
    box.textContent = "Your session has ended after " + Math.round(idle / 60) + " minutes without activity. Reload the page to log in again.";
  }, idle * 1000);
})();
