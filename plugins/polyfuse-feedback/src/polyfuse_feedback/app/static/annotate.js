// Keyboard shortcuts: each button lists its keys in data-key; a key press clicks the button once.
(function () {
  var sent = false;
  document.addEventListener("keydown", function (event) {
    if (sent || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target && /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName)) return;
    var buttons = document.querySelectorAll("button[data-key]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-key").split(" ").indexOf(event.key) >= 0) {
        sent = true;
        event.preventDefault();
        buttons[i].click();
        return;
      }
    }
  });
  var empty = document.getElementById("empty");
  if (empty) {
    setTimeout(function () { window.location.reload(); }, 1000 * Number(empty.getAttribute("data-reload")));
  }
})();
