/* The captcha page's proof of work, solved in the browser (no typing for the user).
 *
 * The challenge in the form's data-challenge attribute is an ALTCHA v2 challenge made by
 * the gateway with the `altcha` Python library: find the counter whose key starts with
 * `keyPrefix`, where key = SHA-256 applied `cost` times, first to
 * salt || nonce || counter (4 bytes, big-endian), then to the previous digest, cut to
 * `keyLength` bytes. The form is then submitted with the payload the library verifies:
 * base64(JSON {challenge, solution: {counter, derivedKey, time}}).
 * Digests come from crypto.subtle, computed in batches so the page stays responsive.
 */
(function () {
  "use strict";

  var form = document.getElementById("captcha-pow");
  if (!form) {
    return;
  }
  var status = document.getElementById("captcha-status");
  var progress = document.getElementById("captcha-progress");
  var button = document.getElementById("captcha-submit");
  var fallback = document.getElementById("captcha-image-link");
  var BATCH = 64;
  var MAX_COUNTER = 0xffffffff;
  var GIVE_UP_MS = 120000;
  var SHOW_AT_LEAST_MS = 1500; // the page says what is happening; it does not flash past
  var shownAt = performance.now();

  function say(key) {
    status.textContent = status.getAttribute("data-" + key) || "";
  }

  function unsupported(key) {
    status.hidden = false;
    say(key);
    if (progress) {
      progress.hidden = true;
    }
    if (fallback) {
      fallback.focus();
    }
  }

  function fromHex(text) {
    var bytes = new Uint8Array(text.length >> 1);
    for (var i = 0; i < bytes.length; i++) {
      bytes[i] = parseInt(text.substr(i * 2, 2), 16);
    }
    return bytes;
  }

  function toHex(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i++) {
      out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return out;
  }

  var subtle = window.crypto && window.crypto.subtle;
  var challenge = null;
  try {
    challenge = JSON.parse(form.getAttribute("data-challenge"));
  } catch (e) {
    challenge = null;
  }
  var params = challenge && challenge.parameters;
  if (!subtle || !params || !/^SHA-(256|384|512)$/.test(params.algorithm) || !/^[0-9a-f]*$/i.test(params.keyPrefix)) {
    unsupported("unsupported");
    return;
  }

  var salt = fromHex(params.salt);
  var nonce = fromHex(params.nonce);
  var prefix = String(params.keyPrefix).toLowerCase();
  var prefixBytes = Math.ceil(prefix.length / 2);
  var keyLength = params.keyLength || 32;
  var cost = Math.max(1, params.cost | 0);
  var offset = salt.length + nonce.length;

  async function derive(counter) {
    var data = new Uint8Array(offset + 4);
    data.set(salt, 0);
    data.set(nonce, salt.length);
    new DataView(data.buffer).setUint32(offset, counter, false);
    var key = new Uint8Array(await subtle.digest(params.algorithm, data));
    for (var i = 1; i < cost; i++) {
      key = new Uint8Array(await subtle.digest(params.algorithm, key));
    }
    return key.subarray(0, keyLength);
  }

  async function solve() {
    var started = performance.now();
    for (var start = 0; start <= MAX_COUNTER; start += BATCH) {
      var jobs = [];
      for (var i = 0; i < BATCH && start + i <= MAX_COUNTER; i++) {
        jobs.push(derive(start + i));
      }
      var keys = await Promise.all(jobs);
      for (i = 0; i < keys.length; i++) {
        if (toHex(keys[i].subarray(0, prefixBytes)).startsWith(prefix)) {
          return { counter: start + i, derivedKey: toHex(keys[i]), time: Math.round(performance.now() - started) };
        }
      }
      if (performance.now() - started > GIVE_UP_MS) {
        return null;
      }
    }
    return null;
  }

  status.hidden = false;
  if (progress) {
    progress.hidden = false;
  }
  say("working");
  solve().then(function (solution) {
    if (!solution) {
      unsupported("failed");
      return;
    }
    var payload = { challenge: challenge, solution: solution };
    document.getElementById("altcha").value = btoa(JSON.stringify(payload));
    say("done");
    if (progress) {
      progress.max = 1;
      progress.value = 1;
    }
    button.hidden = false;
    var left = SHOW_AT_LEAST_MS - (performance.now() - shownAt);
    setTimeout(function () {
      form.submit();
    }, Math.max(0, left));
  }, function () {
    unsupported("unsupported");
  });
})();
