// Shared by the browser tests: the real mooring binary on ephemeral ports,
// Debian's chromium through playwright-core, and waits that end by deadline.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, mkdirSync, copyFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

export const BINARY = process.env.MOORING_BINARY;
if (!BINARY) throw new Error("MOORING_BINARY is not set (tests/browser/run.sh sets it)");
export const OUT = process.env.MOORING_BROWSER_OUT || join(tmpdir(), "mooring-browser");
export const DOCS = process.env.MOORING_DOCS_SCREENSHOTS || "";
export const ADMIN_TOKEN = "browser-test-admin-token-0123456789";
mkdirSync(OUT, { recursive: true });

// Polls `probe` until it returns a truthy value; throws `what` at the deadline.
export async function waitFor(what, probe, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function configText({ gateway = "127.0.0.1:0", admin = "127.0.0.1:0", dataDir, tokenDelay = "40ms" }) {
  return `# mooring, as the browser tests run it
[data]
dir = "${dataDir}"

[gateway]
listen = "${gateway}"

[admin]
listen = "${admin}"
token = "${ADMIN_TOKEN}"

[provider]
kind = "echo"

[provider.echo]
token_delay = "${tokenDelay}"

[shutdown]
drain_timeout = "1s"
`;
}

// The directories made for hosts: removed when the run ends without a
// failure, kept (with each host's log) for reading when one failed.
const madeDirs = [];
process.on("exit", (code) => {
  if (code !== 0 || (process.exitCode ?? 0) !== 0) {
    if (madeDirs.length) console.error(`kept for reading: ${madeDirs.join(" ")}`);
    return;
  }
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

// One mooring process with its own directory, config and ready file.
export class Host {
  constructor(options = {}) {
    this.dir = options.dir || mkdtempSync(join(tmpdir(), "mooring-browser-"));
    if (!options.dir) madeDirs.push(this.dir);
    this.configPath = join(this.dir, "mooring.toml");
    this.readyPath = join(this.dir, "ready.json");
    this.logPath = join(this.dir, "mooring.log");
    this.options = options;
    this.log = "";
  }

  async start(overrides = {}) {
    rmSync(this.readyPath, { force: true });
    writeFileSync(this.configPath, configText({ dataDir: join(this.dir, "data"), ...this.options, ...overrides }));
    this.process = spawn(BINARY, ["serve", "-c", this.configPath, "--ready-file", this.readyPath],
                         { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => { this.log += chunk.toString(); };
    this.process.stdout.on("data", keep);
    this.process.stderr.on("data", keep);
    this.exited = new Promise((resolve) => this.process.on("exit", (code, signal) => resolve({ code, signal })));
    const ready = await waitFor("the ready file", () => this.ready(), 15000);
    this.admin = ready.admin;
    this.gateway = ready.gateway;
    return this;
  }

  ready() {
    if (!existsSync(this.readyPath)) return null;
    try { return JSON.parse(readFileSync(this.readyPath, "utf8")); } catch { return null; }
  }

  url(path = "/") { return `http://${this.admin}${path}`; }

  async api(path, { method = "GET", body, headers = {} } = {}) {
    const res = await fetch(this.url(path), { method, body, headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, ...headers } });
    const text = await res.text();
    let data = null;
    try { data = JSON.parse(text); } catch { /* text */ }
    return { status: res.status, headers: res.headers, text, data };
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    this.process.kill("SIGTERM");
    const timer = setTimeout(() => this.process.kill("SIGKILL"), 10000);
    await this.exited;
    clearTimeout(timer);
    writeFileSync(this.logPath, this.log);
  }
}

// A TCP port held by another listener (for "the port is taken").
export async function holdPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: server.address().port, close: () => new Promise((resolve) => server.close(resolve)) };
}

export async function freePort() {
  const held = await holdPort();
  await held.close();
  return held.port;
}

// Whether something accepts TCP connections at host:port.
export function accepts(address) {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(3000, () => { socket.destroy(); resolve(false); });
    socket.on("connect", () => { socket.destroy(); resolve(true); });
    socket.on("error", () => resolve(false));
  });
}

export async function launch() {
  const args = ["--disable-gpu", "--disable-dev-shm-usage"];
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  return chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args });
}

// A page that records what the panel must never do: violate its
// Content-Security-Policy, throw, or fetch from another origin.
export async function newPage(browser, host, { width = 1280, height = 900, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme });
  const page = await context.newPage();
  page.problems = [];
  // The panel handles the API's refusals (400, 401, 409, 412) itself; the
  // browser still reports each as a failed load, which is not a fault.
  const handled = /^Failed to load resource: the server responded with a status of (400|401|409|412) /;
  page.on("console", (message) => {
    if (message.type() === "error" && !handled.test(message.text())) page.problems.push(`console: ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() === 404 || response.status() >= 500) page.problems.push(`${response.status()} for ${response.url()}`);
  });
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("request", (request) => {
    const url = new URL(request.url());
    const ownHost = url.hostname === "127.0.0.1";
    if (!ownHost && url.protocol !== "data:") page.problems.push(`request to another host: ${request.url()}`);
  });
  return page;
}

export async function signIn(page, host) {
  await page.goto(host.url("/"));
  await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Pages" }).waitFor();
}

export async function screenshot(page, name, docsName) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
  if (DOCS && docsName) copyFileSync(join(OUT, `${name}.png`), join(DOCS, `panel-${docsName}.png`));
}
