// The configuration as TOML: Validate is a dry run (POST /api/config/validate),
// Apply is PUT /api/config with If-Match on the generation it was loaded at.
import { html, useState, useEffect, useRef } from "../lib/html.js";
import { request } from "../lib/api.js";
// CodeMirror (the largest file of the panel) is loaded when this page opens.
const loadEditor = () => import("../lib/editor.js");

const withoutSuffix = (message) => (message || "").replace(/; nothing was changed$/, "");

export function Config() {
  const box = useRef(null);
  const editor = useRef(null);
  const [generation, setGeneration] = useState(null);
  const [loadError, setLoadError] = useState("");
  const [outcome, setOutcome] = useState(null);  // {kind, title, problems?, changed?, ...}
  const [busy, setBusy] = useState("");
  const [dirty, setDirty] = useState(false);
  const [ready, setReady] = useState(false);  // the editor is there

  async function load() {
    const res = await request("/api/config");
    if (!res.ok) { setLoadError(res.message); return; }
    setLoadError("");
    const tag = (res.etag || "").replace(/^W\//, "").replace(/"/g, "");
    const loaded = tag === "" ? null : Number(tag);
    setGeneration(loaded);
    if (!editor.current) {
      const { createEditor } = await loadEditor();
      if (!box.current) return loaded;
      editor.current = createEditor(box.current, res.text,
        { onChange: () => setDirty(true), label: "Configuration (TOML)" });
      setReady(true);
    } else {
      editor.current.setText(res.text);
    }
    editor.current.showProblems([]);
    setDirty(false);
    return loaded;
  }

  useEffect(() => { load(); return () => editor.current?.destroy(); }, []);

  function show(res, commit) {
    const problems = res.data?.error?.problems || [];
    editor.current.showProblems(problems);
    if (res.ok && !commit) {
      const changed = res.data.changed || [];
      setOutcome({ kind: "ok", title: changed.length ? `Valid. Applying it would change: ${changed.join(", ")}.`
                                                     : "Valid. Applying it would change nothing." });
    } else if (res.ok) {
      const data = res.data;
      setGeneration(data.generation);
      setDirty(false);
      const adminMoved = data.listen?.admin && data.listen.admin !== location.host;
      setOutcome({ kind: "ok", title: `Applied: generation ${data.generation} is serving.`,
                   changed: data.changed || [], listen: data.listen, file: data.file,
                   adminMoved: adminMoved ? data.listen.admin : null });
    } else if (res.status === 400 && problems.length) {
      setOutcome({ kind: "error", title: `${problems.length} problem(s); nothing was changed.`, problems });
    } else if (res.status === 409) {
      setOutcome({ kind: "error", title: `${commit ? "could not apply" : "would not apply"}: ${withoutSuffix(res.message)}; the previous configuration is still serving` });
    } else if (res.status === 412) {
      setOutcome({ kind: "stale", title: `Someone applied another configuration since this one was loaded (${res.message}).` });
    } else {
      setOutcome({ kind: "error", title: `${commit ? "Not applied" : "Not validated"}: ${res.message}` });
    }
  }

  async function send(commit) {
    setBusy(commit ? "Applying…" : "Validating…");
    const headers = { "Content-Type": "application/toml" };
    if (commit && generation !== null) headers["If-Match"] = `"${generation}"`;
    const res = await request(commit ? "/api/config" : "/api/config/validate",
                              { method: commit ? "PUT" : "POST", body: editor.current.getText(), headers });
    setBusy("");
    show(res, commit);
  }

  async function reloadCurrent() {
    const loaded = await load();
    setOutcome({ kind: "ok", title: `Loaded the configuration now serving (generation ${loaded ?? "?"}).` });
  }

  return html`
    ${loadError && html`<p class="error" role="alert">Could not load the configuration: ${loadError}</p>`}
    <div class="toolbar">
      <span class="muted">Generation ${generation ?? "?"}${dirty ? " · edited" : ""}</span>
      <button type="button" onClick=${() => send(false)} disabled=${!!busy || !ready}>Validate</button>
      <button type="button" class="primary" onClick=${() => send(true)} disabled=${!!busy || !ready}>Apply</button>
      <button type="button" class="quiet" onClick=${reloadCurrent} disabled=${!!busy || !ready}>Reload</button>
      ${busy && html`<span role="status">${busy}</span>`}
    </div>
    <div class="editor" ref=${box}></div>
    <div class="outcome" aria-live="polite" data-testid="config-outcome">
      ${outcome && html`
        <div class=${`panel ${outcome.kind}`}>
          <p><strong>${outcome.title}</strong></p>
          ${outcome.problems && html`<ul class="problems">${outcome.problems.map((p) => html`
            <li><button type="button" class="link" onClick=${() => editor.current.focusLine(p.line)}>
              ${p.line ? `line ${p.line}` : "file"}</button>${p.key ? html` <code>${p.key}</code>` : ""}: ${p.message}</li>`)}</ul>`}
          ${outcome.changed && html`<p>Changed: ${outcome.changed.length ? outcome.changed.map((k) => html`<code class="key">${k}</code> `) : "nothing"}</p>`}
          ${outcome.listen && html`<p>Listening: gateway <code>${outcome.listen.gateway ?? "—"}</code>, admin <code>${outcome.listen.admin ?? "—"}</code>${outcome.file ? html`; written to <code>${outcome.file}</code>` : ""}</p>`}
          ${outcome.adminMoved && html`<p>The admin panel moved: <a href=${`${location.protocol}//${outcome.adminMoved}/`}>open it at ${outcome.adminMoved}</a>.</p>`}
          ${outcome.kind === "stale" && html`<p><button type="button" onClick=${reloadCurrent}>Load the current configuration</button> (your edits will be replaced)</p>`}
        </div>`}
    </div>`;
}
