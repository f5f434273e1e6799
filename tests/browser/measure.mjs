// Figures for the panel, by hand: node measure.mjs <path of the mooring binary>
// A cold load (no cache) in headless chromium: the sign-in page's first paint
// and first contentful paint, then every page visited once; the bytes each
// static file took on the wire (gzip) and in total.
import { Host, launch, ADMIN_TOKEN } from "./lib/harness.mjs";

const host = await new Host().start();
const browser = await launch();
try {
  const runs = [];
  for (let i = 0; i < 5; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(host.url("/"), { waitUntil: "load" });
    await page.locator("#token").waitFor();
    runs.push(await page.evaluate(() => Object.fromEntries(performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]))));
    await context.close();
  }
  const median = (name) => { const v = runs.map((r) => r[name]).sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };

  const context = await browser.newContext();
  const page = await context.newPage();
  const files = new Map();
  page.on("requestfinished", async (request) => {
    const url = new URL(request.url());
    if (url.pathname.startsWith("/api/")) return;
    const sizes = await request.sizes();
    const response = await request.response();
    files.set(url.pathname, { wire: sizes.responseBodySize + sizes.responseHeadersSize, body: sizes.responseBodySize,
                              encoding: (await response.allHeaders())["content-encoding"] || "identity" });
  });
  await page.goto(host.url("/"));
  await page.locator("#token").waitFor();
  await page.waitForLoadState("networkidle");
  const signInBytes = [...files.values()].reduce((sum, f) => sum + f.wire, 0);
  const signInFiles = files.size;
  await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  for (const id of ["overview", "config", "log", "conversations", "chat", "tasks"]) {
    await page.getByRole("link", { name: { overview: "Overview", config: "Configuration", log: "Live log", conversations: "Conversations", chat: "Chat", tasks: "Tasks" }[id] }).click();
    await page.locator("main h1").waitFor();
    await page.waitForLoadState("networkidle");
  }
  await page.locator(".cm-content").count();
  let wire = 0;
  let body = 0;
  for (const [path, f] of [...files].sort()) {
    console.log(`${path.padEnd(28)} ${String(f.body).padStart(7)} B body (${f.encoding}), ${f.wire} B with headers`);
    wire += f.wire;
    body += f.body;
  }
  console.log(`sign-in page alone: ${signInFiles} files, ${signInBytes} B on the wire`);
  console.log(`every page once: ${files.size} files, bodies ${body} B, on the wire ${wire} B (gzip)`);
  console.log(`first paint ${median("first-paint").toFixed(1)} ms, first contentful paint ${median("first-contentful-paint").toFixed(1)} ms (median of ${runs.length} cold loads)`);
  await context.close();
} finally {
  await browser.close();
  await host.stop();
}
