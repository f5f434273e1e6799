// The panel's shell: signed in or not, the navigation, and the page named by
// the location's hash (#/config), so a reload stays on the same page.
import { html, render, useState, useEffect, useRef } from "./lib/html.js";
import { token, whenUnauthorized } from "./lib/api.js";
import * as events from "./lib/events.js";
import { SignIn } from "./pages/signin.js";
import { Overview } from "./pages/overview.js";
import { Config } from "./pages/config.js";
import { Log } from "./pages/log.js";
import { Conversations } from "./pages/conversations.js";
import { Chat } from "./pages/chat.js";
import { Tasks } from "./pages/tasks.js";

const PAGES = [
  { id: "overview", title: "Overview", component: Overview },
  { id: "config", title: "Configuration", component: Config },
  { id: "log", title: "Live log", component: Log },
  { id: "conversations", title: "Conversations", component: Conversations },
  { id: "chat", title: "Chat", component: Chat },
  { id: "tasks", title: "Tasks", component: Tasks },
];

function currentPage() {
  const id = location.hash.replace(/^#\/?/, "").split("/")[0];
  return PAGES.find((p) => p.id === id) || PAGES[0];
}

function EventsBadge() {
  const [state, setState] = useState({ ...events.state });
  useEffect(() => events.watchState(setState), []);
  return html`<span class=${`badge ${state.connected ? "ok" : "warn"}`} role="status"
    title=${state.note}>${state.connected ? "live" : state.note.startsWith("disconnected") ? "reconnecting…" : state.note}</span>`;
}

function App() {
  const [signedIn, setSignedIn] = useState(token.get() !== "");
  const [notice, setNotice] = useState("");
  const [page, setPage] = useState(currentPage());
  const signOut = useRef(() => {});

  useEffect(() => {
    const onHash = () => setPage(currentPage());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    signOut.current = (why) => {
      // Whatever the tab kept for the operator goes: the admin token, and the
      // test chat's user, gateway token and transcript (the next one to sign
      // in here is not put in the previous one's chat).
      sessionStorage.clear();
      events.stop();
      setNotice(why ? `Signed out: ${why}` : "");
      setSignedIn(false);
    };
    whenUnauthorized((why) => signOut.current(why || "the admin token was refused"));
    if (signedIn) events.start((why) => signOut.current(why));
  }, [signedIn]);

  useEffect(() => { document.title = signedIn ? `${page.title} · mooring admin` : "Sign in · mooring admin"; },
            [page, signedIn]);

  if (!signedIn) {
    return html`<${SignIn} notice=${notice} onSignedIn=${() => { setNotice(""); setSignedIn(true); }} />`;
  }
  const Page = page.component;
  return html`
    <a class="skip" href="#main">Skip to the page</a>
    <header class="top">
      <span class="brand">mooring</span>
      <nav aria-label="Pages">
        ${PAGES.map((p) => html`<a href=${`#/${p.id}`} aria-current=${p.id === page.id ? "page" : undefined}>${p.title}</a>`)}
      </nav>
      <${EventsBadge} />
      <button type="button" class="quiet" onClick=${() => signOut.current("")}>Sign out</button>
    </header>
    <main id="main" tabindex="-1">
      <h1>${page.title}</h1>
      <${Page} />
    </main>`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
