// The login page: a read key typed in, or the one-time code of the first-run link
// (/login#code=...). The code is in the URL fragment, which the browser never sends;
// it is dropped from the address bar at once and posted in a request body. The server
// answers with an HttpOnly cookie; the rest of the fragment (a shared view) is kept.
"use strict";

(function () {
  const status = document.getElementById("login-status");
  let view = "";

  // The fragment minus the code (which leaves the address bar and the history now).
  function takeCode() {
    const params = new URLSearchParams(location.hash.slice(1));
    const code = params.get("code");
    params.delete("code");
    view = params.toString() ? "#" + params.toString() : "";
    if (code !== null) history.replaceState(null, "", location.pathname + view);
    return code;
  }

  async function login(body) {
    status.textContent = "Logging in…";
    let response;
    try {
      response = await fetch("/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
    } catch (error) {
      status.textContent = "Cannot reach the server.";
      return;
    }
    if (response.ok) {
      location.replace("/" + view);
      return;
    }
    let message = `Login failed (HTTP ${response.status}).`;
    try {
      message = (await response.json()).error.message;
    } catch (error) {
      // not our JSON error: keep the status line
    }
    status.textContent = message;
  }

  function fromLink() {
    const code = takeCode();
    if (code) login({ code });
  }

  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login({ key: document.getElementById("key").value.trim() });
  });
  // The link pasted into a tab already showing this page changes only the fragment.
  window.addEventListener("hashchange", fromLink);
  fromLink();
})();
