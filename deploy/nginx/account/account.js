// The account pages' one script: read the token from the URL fragment (browsers never send a
// fragment to a server), take it out of the address bar and history, and call the auth service on
// this origin. Plain DOM, text only (no innerHTML): the pages run under a strict policy
// (default-src 'none', scripts and fetches from this origin only, Trusted Types required).
"use strict";

(() => {
  // A link opened again in this tab is only a new fragment on the same page: start over with it.
  window.addEventListener("hashchange", () => window.location.reload());
  const page = document.body.dataset.page;
  const status = document.getElementById("status");
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (window.location.hash) {
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function show(text, outcome) {
    status.textContent = text;
    status.className = outcome || "";
  }

  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json, application/problem+json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      return { status: 0, document: null };
    }
    let document = null;
    if (response.status !== 204) {
      try {
        document = await response.json();
      } catch {
        document = null;
      }
    }
    return { status: response.status, document };
  }

  // What went wrong, in the service's own words (RFC 9457 problem details: field errors, or the detail).
  function problem(result) {
    const found = result.document;
    if (found && Array.isArray(found.errors) && found.errors.length) {
      return found.errors.map((error) => error.message).join(" ");
    }
    if (found && typeof found.detail === "string") {
      return found.detail;
    }
    if (result.status === 0) {
      return "The server could not be reached. Check your connection and try again.";
    }
    return `Something went wrong (${result.status}). Try again later.`;
  }

  function needsLink(form) {
    if (form) {
      form.hidden = true;
    }
    show("This page needs the link from your mail: open the link itself, as it came.", "failed");
  }

  // Show the form; on each submission run `send`, its button disabled meanwhile.
  function whenSubmitted(form, send) {
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        await send();
      } finally {
        button.disabled = false;
      }
    });
  }

  function resetPassword() {
    const form = document.getElementById("reset");
    if (!token) {
      needsLink(form);
      return;
    }
    whenSubmitted(form, async () => {
      const password = document.getElementById("new-password").value;
      if (password !== document.getElementById("repeat-password").value) {
        show("The two passwords differ.", "failed");
        return;
      }
      show("Setting the new password…");
      const result = await post("/auth/password-reset/confirm", { token, new_password: password });
      if (result.status === 204) {
        form.hidden = true;
        show("Your new password is set. Every session of your account has ended: sign in with the new password.", "done");
      } else if (result.status === 400) {
        form.hidden = true;
        show(`${problem(result)} Ask for a new link from the sign-in page.`, "failed");
      } else {
        show(problem(result), "failed"); // a password the policy refuses (422), a limit, an outage: try again
      }
    });
  }

  async function verifyEmail() {
    if (!token) {
      needsLink(null);
      return;
    }
    const result = await post("/auth/verify-email", { token });
    if (result.status === 204) {
      show("Your email address is confirmed. You can close this page.", "done");
    } else {
      show(problem(result), "failed");
    }
  }

  function reportSignIn() {
    const form = document.getElementById("report");
    if (!token) {
      needsLink(form);
      return;
    }
    whenSubmitted(form, async () => {
      show("Ending that session…");
      const result = await post("/auth/sign-in-alert", { token });
      if (result.status === 200) {
        form.hidden = true;
        const next = result.document && result.document.password_reset_mailed
          ? "We have mailed you a link to choose a new password: use it now."
          : "Now choose a new password: ask for a reset link from the sign-in page.";
        show(`That session has ended. ${next}`, "done");
      } else {
        form.hidden = result.status === 400; // a used or expired link stays so; a limit or an outage may pass
        show(problem(result), "failed");
      }
    });
  }

  const pages = { "reset-password": resetPassword, "verify-email": verifyEmail, "sign-in-alert": reportSignIn };
  pages[page]();
})();
