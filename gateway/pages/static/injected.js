// The "my account" link the gateway adds to the PMS's pages: its button hides it, and a
// browser-session cookie (gw_account_link, no expiry) tells the gateway to stop adding it
// until the browser is closed. The gateway never passes this cookie on to the PMS.
// A file, not an inline script, so a PMS's Content-Security-Policy `default-src 'self'`
// allows it.
(function () {
  "use strict";
  var box = document.getElementById("gw-account");
  var button = box && box.querySelector("button.gw-dismiss");
  if (!button) return;
  button.addEventListener("click", function () {
    box.hidden = true;
    var secure = window.location.protocol === "https:" ? "; Secure" : "";
    document.cookie = "gw_account_link=hidden; Path=/; SameSite=Strict" + secure;
  });
})();
