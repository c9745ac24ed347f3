// What the browser tests share: Debian Chromium through playwright-core, checks that collect
// failures, the API called from a page with its login, and the app's performance measures.
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { chromium } = createRequire(join(repo, 'web_client/package.json'))('playwright-core');

export const SLIDE = process.env.SLIDELABEL_E2E_SLIDE ?? resolve(repo, '../shared/data/slides/CMU-1-Small-Region.svs');
export const PYTHON = process.env.SLIDELABEL_E2E_PYTHON ?? join(repo, '.venv/bin/python');

/** Headless Chromium with a software GPU (the overlay is WebGL). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.SLIDELABEL_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist', '--no-sandbox'],
  });
}

export const failures = [];
export function check(condition, message) {
  console.log(`${condition ? 'ok' : 'FAIL'}: ${message}`);
  if (!condition) failures.push(message);
}
export const step = (name) => console.log(`-- ${name}`);
export const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Calls the API from the page, with the page's login token. */
export const api = (page, method, path, body) => page.evaluate(async ([method, path, body]) => {
  const response = await fetch(`/api/v1${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { Authorization: `Bearer ${localStorage.getItem('slidelabel.token')}`, 'Content-Type': 'application/json' },
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}, [method, path, body]);

/** The durations (ms) of the app's performance measures called `name`. */
export const durations = (page, name) => page.evaluate((name) => performance.getEntriesByName(name).map((e) => e.duration), name);

/** The API from node at `url`: `http(token, method, path, body)` (token null: no login) gives the
 * parsed answer, and throws on an error status. */
export function nodeApi(url) {
  return async function http(token, method, path, body) {
    const response = await fetch(`${url}/api/v1${path}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/** `test()`'s first truthy value, asked every 500 ms; throws naming `what` after `ms`. */
export async function waitFor(what, test, ms = 300_000) {
  const until = Date.now() + ms;
  for (;;) {
    const value = await test();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The server's labels of the slide (the page's user's), as a Map superpixel -> category id. */
export async function serverLabels(page, projectId, slideId) {
  const bytes = await page.evaluate(async (path) => {
    const response = await fetch(`/api/v1${path}`, {
      headers: { Authorization: `Bearer ${localStorage.getItem('slidelabel.token')}` } });
    return [...new Uint8Array(await response.arrayBuffer())];
  }, `/projects/${projectId}/slides/${slideId}/labels.bin`);
  const values = new Uint32Array(new Uint8Array(bytes).buffer);
  const labels = new Map();
  values.forEach((category, id) => category && labels.set(id, category));
  return labels;
}

/** The server's labels once `test(labels)` holds (saves are asynchronous), else the last read. */
export async function labelsWhen(page, projectId, slideId, test, ms = 15_000) {
  const until = Date.now() + ms;
  for (;;) {
    const labels = await serverLabels(page, projectId, slideId);
    if (test(labels) || Date.now() > until) return labels;
    await page.waitForTimeout(200);
  }
}
