/* Security keys (WebAuthn) on the gateway's pages: sign in, enroll, add and remove.
 *
 * Loaded from /_gateway/static/ (no inline script: the pages send a strict CSP). Talks
 * only to the gateway's own JSON endpoints under /_gateway/webauthn/; the server checks
 * every answer. Texts come from the page (id="webauthn-messages"), already translated.
 */
(function () {
  "use strict";

  var BASE = "/_gateway/webauthn/";
  var messagesElement = document.getElementById("webauthn-messages");
  var MESSAGES = messagesElement ? JSON.parse(messagesElement.textContent) : {};

  function t(key, values) {
    var text = MESSAGES[key] || MESSAGES.security_key_error || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  }

  // -- encoding ------------------------------------------------------------------------

  function fromBase64url(value) {
    var base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(options) {
    options.challenge = fromBase64url(options.challenge);
    options.user.id = fromBase64url(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = fromBase64url(c.id); });
    return options;
  }

  function requestOptions(options) {
    options.challenge = fromBase64url(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = fromBase64url(c.id); });
    return options;
  }

  /* The credential as JSON for the server; `fields` are the response's own parts. */
  function credentialJSON(credential, fields) {
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: Object.assign({ clientDataJSON: toBase64url(credential.response.clientDataJSON) }, fields)
    };
  }

  function attestationJSON(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      attestationObject: toBase64url(response.attestationObject),
      transports: response.getTransports ? response.getTransports() : []
    });
  }

  function assertionJSON(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      authenticatorData: toBase64url(response.authenticatorData),
      signature: toBase64url(response.signature),
      userHandle: response.userHandle ? toBase64url(response.userHandle) : null
    });
  }

  // -- plumbing ------------------------------------------------------------------------

  function supported() {
    var host = location.hostname;
    var ipLiteral = /^[0-9.]+$/.test(host) || host.indexOf(":") >= 0 || host.charAt(0) === "[";
    return Boolean(window.PublicKeyCredential && navigator.credentials && window.isSecureContext && !ipLiteral);
  }

  async function post(path, body) {
    var response = await fetch(BASE + path, {
      method: "POST",
      credentials: "same-origin",
      redirect: "error",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {})
    });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { ok: response.ok, status: response.status, data: data };
  }

  function say(element, text, isError) {
    if (!element) return;
    element.textContent = text || "";
    element.className = isError ? "error" : "";
  }

  function errorText(data) {
    var text = t(data.error || "security_key_error");
    if (data.attempts_left !== undefined) text += " " + t("attempts_left", { n: data.attempts_left });
    return text;
  }

  /* Browser refusals (cancel, timeout, no matching key) arrive as NotAllowedError. */
  function browserErrorText(error) {
    if (error && error.name === "InvalidStateError") return t("security_key_already");
    if (error && (error.name === "NotAllowedError" || error.name === "AbortError")) return t("security_key_cancelled");
    if (error && error.name === "SecurityError") return t("security_key_unsupported");
    return t("security_key_error");
  }

  async function create(publicKey) {
    return attestationJSON(await navigator.credentials.create({ publicKey: creationOptions(publicKey) }));
  }

  async function get(publicKey) {
    return assertionJSON(await navigator.credentials.get({ publicKey: requestOptions(publicKey) }));
  }

  // -- the 2FA page: sign in with a key ------------------------------------------------

  async function setUpLogin(box) {
    var button = document.getElementById("use-security-key");
    var status = document.getElementById("security-key-status");
    var answer = await post("login/status");
    if (!answer.ok || !answer.data.available) return;
    box.hidden = false;
    button.addEventListener("click", async function () {
      button.disabled = true;
      say(status, t("security_key_waiting"));
      try {
        var options = await post("login/options");
        if (!options.ok) return fail(options);
        var credential;
        try {
          credential = await get(options.data.publicKey);
        } catch (error) {
          return say(status, browserErrorText(error), true);
        }
        var remember = document.querySelector("input[name=remember]");
        var result = await post("login", { credential: credential, remember: Boolean(remember && remember.checked) });
        if (result.ok && result.data.location) {
          window.location.assign(result.data.location);
          return;
        }
        fail(result);
      } catch (error) {
        say(status, t("security_key_error"), true);
      } finally {
        button.disabled = false;
      }
    });

    function fail(result) {
      if (result.data.error === "no_pending_login") {
        say(status, t("notice_required"), true);
        window.setTimeout(function () { window.location.assign(result.data.login || "/"); }, 1500);
        return;
      }
      if (result.data.error === "wrong_stage") {
        window.location.reload();
        return;
      }
      say(status, errorText(result.data), true);
      if (result.data.error === "too_many_attempts") button.hidden = true;
    }
  }

  // -- the 2FA page: a key as the first factor -----------------------------------------

  function setUpEnroll(box) {
    var button = document.getElementById("enroll-security-key");
    var status = document.getElementById("security-key-status");
    var label = document.getElementById("security-key-label");
    box.hidden = false;
    button.addEventListener("click", async function () {
      button.disabled = true;
      say(status, t("security_key_waiting"));
      try {
        var options = await post("enroll/options", { label: label.value });
        if (!options.ok) return say(status, errorText(options.data), true);
        var credential;
        try {
          credential = await create(options.data.publicKey);
        } catch (error) {
          return say(status, browserErrorText(error), true);
        }
        var result = await post("enroll", { credential: credential });
        if (result.ok && result.data.location) {
          window.location.assign(result.data.location);
          return;
        }
        if (result.data.error === "no_pending_login" || result.data.error === "wrong_stage") {
          window.location.assign(result.data.login || result.data.location || "/");
          return;
        }
        say(status, errorText(result.data), true);
      } catch (error) {
        say(status, t("security_key_error"), true);
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- the account page: list, add, remove ---------------------------------------------

  async function setUpAccount(section) {
    var list = document.getElementById("security-key-list");
    var empty = document.getElementById("security-key-empty");
    var label = document.getElementById("security-key-label");
    var code = document.getElementById("security-key-code");
    var add = document.getElementById("add-security-key");
    var status = document.getElementById("security-key-status");
    var keyCount = 0;

    function show(listing) {
      keyCount = listing.keys.length;
      list.textContent = "";
      listing.keys.forEach(function (key) {
        var item = document.createElement("li");
        item.className = "security-key";
        item.dataset.keyId = String(key.id);
        var name = document.createElement("span");
        name.className = "security-key-label";
        name.textContent = key.label;
        var when = document.createElement("span");
        when.className = "muted";
        when.textContent = " · " + t("security_key_added_on", { date: key.created });
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "secondary";
        remove.textContent = t("remove");
        remove.addEventListener("click", function () { run(remove, "account/remove", { id: key.id }, "security_key_removed"); });
        item.appendChild(name);
        item.appendChild(when);
        item.appendChild(document.createTextNode(" "));
        item.appendChild(remove);
        list.appendChild(item);
      });
      empty.hidden = keyCount > 0;
    }

    /* A current second factor: the code typed, else an assertion of one of the keys. */
    async function proof() {
      var typed = code.value.trim();
      if (typed) return { code: typed };
      if (!keyCount) throw { message: "proof_required" };
      var options = await post("account/confirm/options");
      if (!options.ok) throw { data: options.data };
      return { assertion: await get(options.data.publicKey) };
    }

    async function run(button, path, body, done) {
      button.disabled = true;
      say(status, t("security_key_waiting"));
      try {
        var given = await proof();
        Object.keys(given).forEach(function (k) { body[k] = given[k]; });
        var result;
        if (path === "account/register") {
          var options = await post("account/register/options", body);
          if (!options.ok) return say(status, errorText(options.data), true);
          var credential = await create(options.data.publicKey);
          result = await post("account/register", { credential: credential });
        } else {
          result = await post(path, body);
        }
        if (!result.ok) {
          if (result.data.error === "no_session") return window.location.assign(result.data.login || "/");
          return say(status, errorText(result.data), true);
        }
        code.value = "";
        label.value = "";
        show(result.data);
        if (result.data.codes) showCodes(result.data.codes);
        say(status, t(done));
      } catch (error) {
        if (error && error.message === "proof_required") say(status, t("proof_required"), true);
        else if (error && error.data) say(status, errorText(error.data), true);
        else say(status, browserErrorText(error), true);
      } finally {
        button.disabled = false;
      }
    }

    /* New recovery codes, shown once, as text nodes (never as markup). */
    function showCodes(codes) {
      var list = document.getElementById("security-key-recovery-codes");
      list.textContent = "";
      codes.forEach(function (value) {
        var item = document.createElement("li");
        item.textContent = value;
        list.appendChild(item);
      });
      list.hidden = false;
    }

    var answer = await post("account/keys");
    if (!answer.ok) return;
    show(answer.data);
    section.hidden = false;
    add.addEventListener("click", function () { run(add, "account/register", { label: label.value }, "security_key_added"); });
    var renew = document.getElementById("security-key-new-codes");
    renew.addEventListener("click", function () { run(renew, "account/recovery-codes", {}, "recovery_codes_replaced"); });
  }

  // -- start ---------------------------------------------------------------------------

  function start() {
    if (!supported()) return;
    var login = document.getElementById("security-key-login");
    var enroll = document.getElementById("security-key-enroll");
    var account = document.getElementById("security-keys");
    if (login) setUpLogin(login);
    if (enroll) setUpEnroll(enroll);
    if (account) setUpAccount(account);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
