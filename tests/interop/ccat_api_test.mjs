// Cheshire Cat's own TypeScript client, `ccat-api` (pinned in package-lock.json),
// against the real mooring binary: text message, image message, a reconnect
// after the server closed the connection, and the gateway token passed the way
// ccat-api passes it, in the query string (ws://host:port/ws/<user>?token=...).
//
// ccat-api hands a frame to onMessage when it is a message (text, user_id, who
// and type) or a token (content and type), and to onError otherwise, as it does
// for socket errors. So: onError must never fire, and every reply must arrive
// through onMessage.
//
// Usage: node ccat_api_test.mjs <path to the mooring binary>
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let CatClient, WebSocket;
try {
  ({ CatClient } = require('ccat-api'));
  WebSocket = require('ws');
} catch (e) {
  console.error(`ccat-api is not installed: run \`npm ci\` in ${path.dirname(new URL(import.meta.url).pathname)} (make test does) (${e.message})`);
  process.exit(1);
}

const binary = process.argv[2] && path.resolve(process.argv[2]);
if (!binary || !fs.existsSync(binary)) {
  console.error(`usage: node ccat_api_test.mjs <mooring binary> (got ${binary})`);
  process.exit(1);
}

const TOKEN = 'interop-Token_1.2';
const USER = 'alice';
const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==';

let passed = 0;
let failed = 0;

// Resolves when `probe()` returns something other than undefined; rejects at the deadline.
function until(what, probe, ms = 20000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      let value;
      try { value = probe(); } catch (e) { reject(e); return; }
      if (value !== undefined) { resolve(value); return; }
      if (Date.now() > deadline) { reject(new Error(`timed out after ${ms} ms waiting for ${what}`)); return; }
      setTimeout(tick, 10);
    };
    tick();
  });
}

function expectEqual(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected))
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// mooring serve in a directory of its own, on ephemeral ports.
async function startHost() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mooring-interop-'));
  fs.writeFileSync(path.join(dir, 'mooring.toml'),
    `[gateway]\nlisten = "127.0.0.1:0"\ntoken = "${TOKEN}"\n[admin]\nlisten = "127.0.0.1:0"\n`);
  const ready = path.join(dir, 'ready.json');
  const child = spawn(binary, ['serve', '--ready-file', ready], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const host = { dir, child, log: '', exit: undefined };
  child.stdout.on('data', (d) => { host.log += d; });
  child.stderr.on('data', (d) => { host.log += d; });
  child.on('exit', (code, signal) => { host.exit = { code, signal }; });
  child.on('error', (e) => { host.exit = { error: e.message }; });
  const gateway = await until('the ready file', () => {
    if (host.exit) throw new Error(`mooring exited at start (${JSON.stringify(host.exit)}):\n${host.log}`);
    try {
      const parsed = JSON.parse(fs.readFileSync(ready, 'utf8'));
      return parsed.gateway && parsed.admin ? parsed.gateway : undefined;
    } catch { return undefined; }
  }, 60000);
  const colon = gateway.lastIndexOf(':');
  host.host = gateway.slice(0, colon);
  host.port = Number(gateway.slice(colon + 1));
  return host;
}

async function stopHost(host) {
  if (!host.exit) {
    host.child.kill('SIGINT');
    await until('mooring to exit after SIGINT', () => host.exit, 30000);
  }
  const markers = ['AddressSanitizer', 'LeakSanitizer', 'runtime error:', 'terminate called', 'Segmentation fault'];
  const marker = markers.find((m) => host.log.includes(m));
  if (host.exit.code !== 0 || marker)
    throw new Error(`mooring did not stop cleanly (${JSON.stringify(host.exit)}${marker ? `, "${marker}" in its log` : ''})`);
  fs.rmSync(host.dir, { recursive: true, force: true });
}

const host = await startHost();
const errors = [];     // every onError call: (error, event)
const messages = [];   // every onMessage call
let connects = 0;
let disconnects = 0;
const client = new CatClient({
  host: host.host,
  port: host.port,
  credential: TOKEN,
  userId: USER,
  ws: { delay: 100, retries: 5, onFailed: (e) => errors.push({ onFailed: e }) },
});
client.onError((error, event) => errors.push({ error, event: event?.message ?? event?.type }));
client.onMessage((message) => messages.push(message));
client.onConnected(() => { connects += 1; });
client.onDisconnected(() => { disconnects += 1; });

// Sends through ccat-api and waits for the reply's final `chat` frame; checks
// that the streamed tokens spell the same reply.
async function exchange(msg, expected) {
  const from = messages.length;
  client.send(msg);
  const reply = await until(`the reply to ${JSON.stringify(msg.text)}`,
    () => messages.slice(from).find((m) => m.type === 'chat'));
  expectEqual(reply.text, expected, 'the reply text');
  expectEqual(reply.who, 'AI', 'who');
  expectEqual(reply.user_id, USER, 'user_id');
  const tokens = messages.slice(from).filter((m) => m.type === 'chat_token').map((m) => m.content).join('');
  expectEqual(tokens, expected, 'the streamed tokens joined');
}

async function step(name, body) {
  const before = errors.length;
  try {
    await body();
    // Frames that arrived with the reply are handled by now; any error among them counts.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (errors.length !== before) throw new Error('onError fired');
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e.message}`);
    for (const error of errors.slice(before)) console.log(`  onError: ${JSON.stringify(error)}`);
  }
}

try {
  await step('ccat-api connects with the token in the query string', async () => {
    await until('onConnected', () => (connects === 1 ? true : undefined));
  });

  await step('a text message gets its reply through onMessage', async () => {
    await exchange({ text: 'Hello, Cat!' }, 'echo: Hello, Cat!');
  });

  await step('an image message gets its reply through onMessage', async () => {
    await exchange({ text: 'What is in this picture?', image: PNG }, 'echo: What is in this picture? (1 image)');
  });

  await step('after the server closes the connection, ccat-api reconnects and chats on', async () => {
    // A newer connection of the same user replaces this one (close 4000):
    // ccat-api sees the server end the connection and reconnects by itself.
    const newer = new WebSocket(`ws://${host.host}:${host.port}/ws/${USER}?token=${TOKEN}`);
    newer.on('error', () => {});
    await until('ccat-api to see its connection closed', () => (disconnects === 1 ? true : undefined));
    newer.close();
    await until('ccat-api to reconnect', () => (connects === 2 ? true : undefined));
    await exchange({ text: 'still there?' }, 'echo: still there?');
  });

  await step('the gateway refuses a wrong token in the query string', async () => {
    const outcome = await new Promise((resolve) => {
      const ws = new WebSocket(`ws://${host.host}:${host.port}/ws/mallory?token=wrong`);
      ws.on('unexpected-response', (_req, res) => { resolve(`HTTP ${res.statusCode}`); ws.terminate(); });
      ws.on('close', (code) => resolve(`close ${code}`));
      ws.on('error', () => {});
    });
    if (!/^(HTTP 401|close 1008)$/.test(outcome)) throw new Error(`a wrong token was not refused (${outcome})`);
  });
} finally {
  client.close();
  await step('mooring stops cleanly on SIGINT', async () => stopHost(host));
}

if (failed) {
  const tail = host.log.split('\n').slice(-40).join('\n');
  console.log(`---- the end of mooring's log ----\n${tail}\n---- end of log ----`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
