// The web admin panel in a real browser (Debian's chromium, headless) against
// the real mooring binary on ephemeral ports. Each test saves a screenshot in
// $MOORING_BROWSER_OUT; with $MOORING_DOCS_SCREENSHOTS set, one of each page
// is also copied there (docs/panel-*.png).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Host, launch, newPage, signIn, screenshot, waitFor, holdPort, freePort, accepts, ADMIN_TOKEN } from "./lib/harness.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// Runs `body` with a fresh mooring and a fresh page; stops both whatever happens,
// and fails the test if the page broke its policy, threw, or left this host.
async function withPanel(body, options = {}) {
  const host = await new Host(options.host).start();
  const page = await newPage(browser, host, options.viewport);
  try {
    await body({ host, page });
    assert.deepEqual(page.problems, [], "the page logged no errors and asked no other host");
  } finally {
    await page.context().close();
    await host.stop();
  }
  assert.ok(!host.log.includes(ADMIN_TOKEN), "the admin token never reaches mooring's log");
}

// Replaces the editor's whole text (through CodeMirror, as typing would).
async function setEditorText(page, text) {
  await page.locator(".cm-content").click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.locator(".cm-content").evaluate((el, value) => {
    el.cmView.view.dispatch({ changes: { from: 0, to: el.cmView.view.state.doc.length, insert: value } });
  }, text).catch(async () => { await page.keyboard.insertText(text); });
  assert.equal(await editorText(page), text);
}

const editorText = (page) => page.locator(".cm-content").evaluate((el) =>
  Array.from(el.querySelectorAll(".cm-line"), (line) => line.textContent).join("\n"));

async function openConfig(page) {
  await page.getByRole("link", { name: "Configuration" }).click();
  await page.locator(".cm-content").waitFor();
  await waitFor("the configuration text", async () => (await editorText(page)).includes("[gateway]"));
}

test("sign in: a wrong token is refused, the right one opens the overview", () => withPanel(async ({ host, page }) => {
  const response = await page.goto(host.url("/"));
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self' 'sha256-[A-Za-z0-9+/=]+';/);
  assert.doesNotMatch(csp, /unsafe-eval/);
  await page.getByLabel("Admin token").fill("not-the-admin-token-at-all");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "That token was refused" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
  await screenshot(page, "signin-refused", "signin");

  await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("readiness").filter({ hasText: "ready" }).waitFor();
  await page.getByTestId("listen-gateway").filter({ hasText: host.gateway }).waitFor();
  assert.ok(!page.url().includes(ADMIN_TOKEN), "the token is never in the page's URL");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("mooring.admin-token")), ADMIN_TOKEN);
  await page.locator(".uplot").first().waitFor();
  await screenshot(page, "overview", "overview");

  // What the test chat keeps (its user, gateway token and transcript) goes
  // with the sign-out too: it used to stay for the next operator of the tab.
  const keepChat = () => page.evaluate(() => sessionStorage.setItem("mooring.chat",
    JSON.stringify({ user: "panel-kept", gatewayToken: "kept-gateway-token", items: [] })));
  await keepChat();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Admin token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "nothing is kept after a sign-out");

  // The admin token changes on the server: the panel is signed out and says why.
  await signIn(page, host);
  await keepChat();
  const text = (await host.api("/api/config")).text;
  const changed = await host.api("/api/config", { method: "PUT", body: text.replace(ADMIN_TOKEN, "another-admin-token-0123456789") });
  assert.equal(changed.status, 200, changed.text);
  await page.locator(".notice").filter({ hasText: "Signed out:" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
}));

test("a port that is taken: the error is shown and the old port still serves", () => withPanel(async ({ host, page }) => {
  const taken = await holdPort();
  try {
    await signIn(page, host);
    await openConfig(page);
    const text = await editorText(page);
    await setEditorText(page, text.replace(/(\[gateway\]\nlisten = )"[^"]*"/, `$1"127.0.0.1:${taken.port}"`));
    await page.getByRole("button", { name: "Apply" }).click();
    const outcome = page.getByTestId("config-outcome");
    await outcome.filter({ hasText: "could not apply:" }).waitFor();
    const shown = await outcome.innerText();
    assert.match(shown, new RegExp(`could not apply: .*${taken.port}.*; the previous configuration is still serving`));
    await screenshot(page, "config-port-taken", "config-error");
    assert.ok(await accepts(host.gateway), "the old gateway port still accepts connections");
    const status = await host.api("/api/status");
    assert.equal(status.data.generation, 1);
    assert.equal(status.data.components.find((c) => c.name === "gateway").listen, host.gateway);
  } finally {
    await taken.close();
  }
}));

test("moving the gateway port: the overview shows the new address", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  await openConfig(page);
  const port = await freePort();
  const moved = `127.0.0.1:${port}`;
  await setEditorText(page, (await editorText(page)).replace(/(\[gateway\]\nlisten = )"[^"]*"/, `$1"${moved}"`));
  await page.getByRole("button", { name: "Validate" }).click();
  await page.getByTestId("config-outcome").filter({ hasText: "Valid. Applying it would change: gateway.listen" }).waitFor();
  assert.equal(host.ready().gateway, host.gateway, "validating changed nothing");
  await page.getByRole("button", { name: "Apply" }).click();
  const outcome = page.getByTestId("config-outcome");
  await outcome.filter({ hasText: "Applied: generation 2 is serving." }).waitFor();
  assert.match(await outcome.innerText(), /Changed: gateway\.listen/);
  await screenshot(page, "config-applied", "config");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByTestId("listen-gateway").filter({ hasText: moved }).waitFor();
  await waitFor("the ready file to name the new port", () => host.ready()?.gateway === moved);
  await screenshot(page, "overview-moved");

  // Another change since this page loaded: 412, and the panel offers the current text.
  await openConfig(page);
  await host.api("/api/config", { method: "PUT", body: (await host.api("/api/config")).text.replace('"40ms"', '"5ms"') });
  await setEditorText(page, (await editorText(page)).replace('"40ms"', '"7ms"'));
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByTestId("config-outcome").filter({ hasText: "Someone applied another configuration" }).waitFor();
  await page.getByRole("button", { name: "Load the current configuration" }).click();
  await waitFor("the current text", async () => (await editorText(page)).includes('"5ms"'));
}));

test("a typo: the error is shown at its line", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  await openConfig(page);
  const text = await editorText(page);
  const typo = text.replace('kind = "echo"', 'knd = "echo"');
  const line = typo.split("\n").findIndex((l) => l.startsWith("knd")) + 1;
  await setEditorText(page, typo);
  await page.getByRole("button", { name: "Validate" }).click();
  const problem = page.locator(".problems li").filter({ hasText: `line ${line}` });
  await problem.waitFor();
  assert.match(await problem.innerText(), /knd/);
  // The editor marks that very line.
  const marked = await page.locator(".cm-lintRange-error").first().evaluate((el) => el.closest(".cm-line").textContent);
  assert.equal(marked, 'knd = "echo"');
  await problem.getByRole("button").click();
  await screenshot(page, "config-typo", "config-typo");
  assert.equal((await host.api("/api/status")).data.generation, 1);
}));

test("chat: a streamed reply with ack and seq, resumed after a reload", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  await page.getByRole("link", { name: "Chat" }).click();
  await page.getByTestId("chat-connection").filter({ hasText: `Connected to ws://127.0.0.1:${host.gateway.split(":")[1]}/ws/` }).waitFor();
  const message = "hello mooring, please stream this reply back to me in many small pieces";
  await page.getByLabel("Message").fill(message);
  await page.getByLabel("Message").press("Enter");
  await page.locator(".bubble.user .meta").filter({ hasText: /ack · seq \d+/ }).waitFor();
  // Seen while it streams, then final with its own seq.
  await page.locator(".bubble.ai.streaming").waitFor();
  const partial = await page.locator(".bubble.ai.streaming .body").innerText();
  assert.ok(partial.length < `echo: ${message}`.length, "a piece arrived before the whole reply");
  const reply = page.locator(".bubble.ai:not(.streaming)").last();
  await reply.filter({ hasText: `echo: ${message}` }).waitFor();
  assert.match(await reply.locator(".meta").innerText(), /seq \d+ · reply to \d+/);
  await screenshot(page, "chat", "chat");

  // A reply still streaming when the page reloads comes back by resume.
  const second = "a second message, answered while the page reloads";
  await page.getByLabel("Message").fill(second);
  await page.getByLabel("Message").press("Enter");
  await page.locator(".bubble.ai.streaming").waitFor();
  await page.reload();
  await page.getByTestId("chat-connection").filter({ hasText: "Connected to" }).waitFor();
  await page.locator(".bubble.ai").filter({ hasText: `echo: ${second}` }).waitFor();
  assert.equal(await page.locator(".bubble.ai").filter({ hasText: `echo: ${message}` }).count(), 1, "the transcript survived, once");

  // The conversation is in the store, with seq, role and delivery state.
  await page.getByRole("link", { name: "Conversations" }).click();
  const user = await page.evaluate(() => JSON.parse(sessionStorage.getItem("mooring.chat")).user);
  await page.getByRole("button", { name: user }).click();
  await page.locator(".msg.assistant").filter({ hasText: `echo: ${second}` }).waitFor();
  assert.match(await page.locator(".msg.assistant").first().locator(".meta").innerText(), /#\d+\s+assistant\s+.*\s+delivered/);
  await screenshot(page, "conversation", "conversations");
}));

test("live log: shows the reload, and reconnects by itself when mooring comes back", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  await page.getByRole("link", { name: "Live log" }).click();
  await page.getByTestId("log-connection").filter({ hasText: "Connected" }).waitFor();
  const text = (await host.api("/api/config")).text;
  const put = await host.api("/api/config", { method: "PUT", body: text.replace('"40ms"', '"10ms"') });
  assert.equal(put.status, 200);
  await page.locator(".log li").filter({ hasText: "configuration generation 2 applied: provider.echo.token_delay changed" }).first().waitFor();
  await page.getByLabel("Search").fill("generation 2");
  await waitFor("the search to narrow the log", async () =>
    (await page.locator(".log li").allInnerTexts()).every((line) => line.includes("generation 2")));
  await screenshot(page, "log", "log");
  await page.getByLabel("Search").fill("");

  // The level filter hides what is below it.
  await page.getByLabel("Level").selectOption("warning");
  await waitFor("info lines to be hidden", async () => (await page.locator(".log li").count()) === 0);
  await page.getByLabel("Level").selectOption("debug");

  // Paused, new lines wait; resumed, they appear.
  await page.getByRole("button", { name: "Pause" }).click();
  const third = await host.api("/api/config", { method: "PUT", body: text.replace('"40ms"', '"20ms"') });
  assert.equal(third.status, 200);
  await page.getByRole("button", { name: /^Resume \([1-9]\d* waiting\)$/ }).waitFor();
  assert.equal(await page.locator(".log li").filter({ hasText: "generation 3" }).count(), 0);
  await page.getByRole("button", { name: /^Resume/ }).click();
  await page.locator(".log li").filter({ hasText: "configuration generation 3 applied" }).first().waitFor();

  // mooring stops and starts again on the same admin port.
  const admin = host.admin;
  await host.stop();
  await page.getByTestId("log-connection").filter({ hasText: "reconnecting" }).waitFor();
  await host.start({ admin });
  await page.locator(".log li").filter({ hasText: "live events reconnected" }).waitFor({ timeout: 20000 });
  await page.getByTestId("log-connection").filter({ hasText: "Connected" }).waitFor();
  await screenshot(page, "log-reconnected");
}));

test("tasks: cancel one", () => withPanel(async ({ host, page }) => {
  // An idle connection to the gateway is a task of its own.
  const [gatewayHost, gatewayPort] = [host.gateway.split(":")[0], Number(host.gateway.split(":")[1])];
  const socket = net.connect({ host: gatewayHost, port: gatewayPort });
  const closed = new Promise((resolve) => socket.on("close", resolve));
  socket.on("error", () => {});
  await new Promise((resolve) => socket.on("connect", resolve));
  const name = `gateway connection 127.0.0.1:${socket.localPort}`;
  try {
    await signIn(page, host);
    await page.getByRole("link", { name: "Tasks" }).click();
    const row = page.locator("tr").filter({ hasText: name });
    await row.waitFor();
    await row.getByRole("button", { name: /^Cancel task/ }).click();
    await screenshot(page, "tasks-confirm", "tasks");
    await row.getByRole("button", { name: "Confirm cancel" }).click();
    await page.getByRole("status").filter({ hasText: /Asked task \d+ .* to stop/ }).waitFor();
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error("the cancelled connection stayed open")), 10000))]);
    await waitFor("the task to leave the list", async () => (await row.count()) === 0);
    await screenshot(page, "tasks-cancelled");
  } finally {
    socket.destroy();
  }
}));

test("360 px wide and by keyboard alone", () => withPanel(async ({ host, page }) => {
  await page.goto(host.url("/"));
  await page.locator("#token").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "token");
  await page.keyboard.type(ADMIN_TOKEN);
  await page.keyboard.press("Enter");
  await page.getByTestId("readiness").waitFor();
  // Tab from the top reaches the navigation; Enter on a link opens its page.
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(() => document.activeElement.textContent === "Tasks")) break;
  }
  await page.keyboard.press("Enter");
  await page.locator("h1").filter({ hasText: "Tasks" }).waitFor();
  for (const id of ["overview", "config", "log", "conversations", "chat", "tasks"]) {
    await page.goto(host.url(`/#/${id}`));
    await page.locator("main h1").waitFor();
    await page.waitForLoadState("networkidle");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `${id} fits 360 px (overflows by ${overflow} px)`);
    await screenshot(page, `narrow-${id}`, id === "overview" ? "narrow" : undefined);
  }
}, { viewport: { width: 360, height: 740 } }));

test("dark and light follow the system", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(await background(), "rgb(13, 17, 23)");
  await openConfig(page);
  const editorBackground = () => page.locator(".cm-editor").evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(await editorBackground(), "rgb(13, 17, 23)");
  await screenshot(page, "config-dark", "dark");
  await page.emulateMedia({ colorScheme: "light" });
  await waitFor("the light scheme", async () => (await background()) === "rgb(255, 255, 255)");
  await waitFor("the light editor", async () => (await editorBackground()) !== "rgb(13, 17, 23)");
}, { viewport: { width: 1280, height: 900, colorScheme: "dark" } }));

test("conversations: 60 users in pages of 50, searched", () => withPanel(async ({ host, page }) => {
  await signIn(page, host);
  // Sixty users, each with one acknowledged message, from the page itself.
  await page.evaluate(async (gateway) => {
    for (let i = 0; i < 60; i++) {
      await new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${gateway}/ws/user-${String(i).padStart(2, "0")}`);
        ws.onopen = () => ws.send(JSON.stringify({ text: `hello from ${i}`, id: `m${i}` }));
        ws.onmessage = (m) => { if (JSON.parse(m.data).type === "ack") { ws.close(); resolve(); } };
        ws.onerror = () => reject(new Error(`user ${i} could not connect`));
      });
    }
  }, host.gateway);
  await page.getByRole("link", { name: "Conversations" }).click();
  await page.getByText("1–50").waitFor();
  assert.equal(await page.locator("tbody tr").count(), 50);
  await page.getByRole("button", { name: "Older" }).click();
  await page.getByText("51–60").waitFor();
  assert.equal(await page.locator("tbody tr").count(), 10);
  assert.ok(await page.getByRole("button", { name: "Older" }).isDisabled());
  await page.getByRole("button", { name: "Newer" }).click();
  await page.getByText("1–50").waitFor();
  await page.getByLabel("Search this page").fill("user-4");
  await waitFor("the search to narrow the list", async () => (await page.locator("tbody tr").count()) <= 10);
  const users = await page.locator("tbody tr td:first-child").allInnerTexts();
  assert.ok(users.length > 0 && users.every((u) => u.startsWith("user-4")), users.join(", "));
  await page.getByRole("button", { name: users[0] }).click();
  await page.locator(".msg.user").filter({ hasText: `hello from ${Number(users[0].slice(5))}` }).waitFor();
}));
