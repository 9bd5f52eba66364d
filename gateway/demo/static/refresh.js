/* Polls the PMS for new bookings every 30 seconds, like the old desk screen did. */
(function () {
  "use strict";
  function refresh() {
    var request = new XMLHttpRequest();
    request.open("GET", "/api/refresh", true);
    request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    request.onload = function () {
      if (request.status !== 200) { return; }
      var data = JSON.parse(request.responseText);
      var count = document.getElementById("new-bookings");
      var time = document.getElementById("server-time");
      if (count) { count.textContent = String(data.new_bookings); }
      if (time) { time.textContent = "(updated " + data.server_time + ")"; }
    };
    request.send();
  }
  window.setInterval(refresh, 30000);
}());
