// Sign in with the admin token: checked against GET /api/status before it is
// kept (sessionStorage), so a wrong token is refused here, not later.
import { html, useState } from "../lib/html.js";
import { token, request } from "../lib/api.js";

export function SignIn({ notice, onSignedIn }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const candidate = value.trim();
    if (!candidate) { setError("Enter the admin token."); return; }
    setBusy(true);
    setError("");
    const previous = token.get();
    token.set(candidate);
    const res = await request("/api/status", { quiet401: true });
    setBusy(false);
    if (res.ok) { setValue(""); onSignedIn(); return; }
    if (previous) token.set(previous); else token.clear();
    setError(res.status === 401 ? "That token was refused: it is not mooring's admin token."
                                : `Could not sign in: ${res.message}`);
  }

  return html`
    <main class="signin" id="main">
      <form onSubmit=${submit} aria-describedby="signin-help">
        <h1>mooring admin</h1>
        ${notice && html`<p class="notice" role="status">${notice}</p>`}
        <label for="token">Admin token</label>
        <input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
          value=${value} onInput=${(e) => setValue(e.currentTarget.value)} autofocus required />
        <p id="signin-help" class="help">It is <code>[admin] token</code> in the configuration, or, when
          that is empty, the file <code>admin.token</code> in the data directory (mooring logs
          where at start). It is kept for this tab only.</p>
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>${busy ? "Checking…" : "Sign in"}</button>
      </form>
    </main>`;
}
