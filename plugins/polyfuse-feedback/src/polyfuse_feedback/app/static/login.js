// A login link carries its token after '#': browsers never send it to the server, so it never reaches a log.
(function () {
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname);
  document.getElementById("token").value = decodeURIComponent(match[1]);
  document.getElementById("login").submit();
})();
