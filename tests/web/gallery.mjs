// Browser test of gallery links, in headless Debian Chromium against a real `slidelabel serve` on
// the CMU sample: the owner publishes a read-only link on the project page (labels overlay, the
// slide chosen) and copies it; a fresh browser context with no login opens it and sees the slide
// with the overlay, the legend and the latest epoch's figures, while the page calls nothing but
// the link's own GET routes and sends no login; writes through the link are refused; the owner
// revokes it and the link shows "this link was revoked or never existed". Screenshots go to
// SLIDELABEL_E2E_SCREENSHOTS (or a new folder).
//
//   node tests/web/gallery.mjs

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PYTHON, SLIDE, check, failures, launchBrowser, nodeApi, repo, step, waitFor } from './browser.mjs';
import { ADMIN_PASSWORD, startServer } from './server.mjs';

const shots = process.env.SLIDELABEL_E2E_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'slidelabel-gallery-'));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);

const server = await startServer({ python: PYTHON, repo, slideFolder: dirname(SLIDE) });
const browser = await launchBrowser();

const http = nodeApi(server.url);

const timings = {};
let exitCode = 1;
try {
  step('a prepared project with labels of two categories and a trained epoch, through the API');
  const token = (await http(null, 'POST', '/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).token;
  const project = await http(token, 'POST', '/projects', {
    name: 'gallery', categories: [{ name: 'tumour' }, { name: 'stroma' }, { name: 'glass', excluded: true }] });
  const [tumour, stroma] = project.categories.map((c) => c.id);
  const slide = (await http(token, 'POST', `/projects/${project.id}/slides`, { path: SLIDE })).added[0];
  await http(token, 'POST', `/projects/${project.id}/jobs/prepare`);
  const ready = await waitFor('the slide\'s superpixels and features', async () => {
    const [s] = await http(token, 'GET', `/projects/${project.id}/slides`);
    if ([s.superpixels_job?.state, s.features_job?.state].includes('failed')) throw new Error('prepare failed');
    return s.features_job?.state === 'done' && s.superpixels ? s : null;
  });
  const n = ready.superpixels;
  const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
  const labelled = { [tumour]: range(1, Math.floor(n / 3)), [stroma]: range(n - Math.floor(n / 3) + 1, n) };
  for (const [category, superpixels] of Object.entries(labelled)) {
    await http(token, 'PUT', `/projects/${project.id}/slides/${slide.id}/labels`, { superpixels, category_id: Number(category) });
  }
  const job = await http(token, 'POST', `/projects/${project.id}/epochs`);
  await waitFor('epoch 1', async () => {
    const state = (await http(token, 'GET', `/projects/${project.id}/jobs/${job.id}`)).state;
    if (['failed', 'cancelled'].includes(state)) throw new Error(`the epoch job ${state}`);
    return state === 'done';
  });
  const labelCount = labelled[tumour].length + labelled[stroma].length;
  check(labelCount > 100, `${labelCount} of ${n} superpixels labelled, epoch 1 trained`);

  step('the owner publishes a link to the slide, labels overlay, on the project page');
  const ownerContext = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const owner = await ownerContext.newPage();
  owner.setDefaultTimeout(60_000);
  owner.on('pageerror', (error) => failures.push(`owner page error: ${error.message}`));
  await owner.goto(`${server.url}/`);
  await owner.evaluate((token) => localStorage.setItem('slidelabel.token', token), token);
  await owner.goto(`${server.url}/#/p/${project.id}`);
  await owner.reload();
  await owner.waitForSelector('form.gallery-publish');
  await owner.selectOption('select[name=gallery-overlay]', 'labels');
  await owner.uncheck('input[name=gallery-all]');
  await owner.check(`input[name=gallery-slide][value="${slide.id}"]`);
  await owner.click('#gallery-create');
  const address = await (await owner.waitForSelector('#gallery-address')).inputValue();
  check(/#\/gallery\/[A-Za-z0-9_-]{43,}$/.test(address), `the link is shown once: ${address.replace(/[^/]{12}$/, '…')}`);
  await owner.waitForSelector('table.gallery-list tr[data-state=active]');
  await owner.locator('#gallery-heading').scrollIntoViewIfNeeded();
  await owner.screenshot({ path: join(shots, 'gallery-01-owner-panel.png'), fullPage: true });
  const galleryToken = decodeURIComponent(address.split('#/gallery/')[1]);

  step('a fresh browser context, never logged in, opens the link');
  const anonymousContext = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const anonymous = await anonymousContext.newPage();
  anonymous.setDefaultTimeout(60_000);
  anonymous.on('pageerror', (error) => failures.push(`gallery page error: ${error.message}`));
  const calls = [];
  anonymous.on('request', (request) => {
    const url = new URL(request.url());
    if (url.pathname.startsWith('/api/')) calls.push({ method: request.method(), path: url.pathname,
      query: url.search, login: Boolean(request.headers().authorization) });
  });
  const opened = Date.now();
  await anonymous.goto(address);
  await anonymous.waitForSelector('#gallery-legend .category');
  await anonymous.waitForSelector(`#viewer[data-coloured="${labelCount}"]`);
  timings.openToOverlayMs = Date.now() - opened;
  await anonymous.waitForLoadState('networkidle');
  await anonymous.waitForTimeout(1000); // the last tiles drawn
  const legend = await anonymous.$$eval('#gallery-legend .category', (rows) => rows.map((r) => r.textContent));
  check(legend.join('|') === 'tumour|stroma|glassnot trained', `the legend: ${legend.join(', ')}`);
  check(await anonymous.locator('.topbar').textContent().then((t) => t.includes('gallery')), 'the project name heads the page');
  const figures = await anonymous.locator('#gallery-figures').textContent();
  check(figures.includes('Epoch 1') && (await anonymous.$$('#gallery-figures svg')).length >= 1,
    `the latest epoch's figures: "${figures.slice(0, 60)}…"`);
  check(await anonymous.locator('.gallery-slide').count() === 1, 'the picker offers the one chosen slide');
  await anonymous.screenshot({ path: join(shots, 'gallery-02-anonymous-view.png') });
  await anonymous.screenshot({ path: join(shots, 'gallery-03-anonymous-figures.png'), fullPage: true });

  const viewer = await anonymous.locator('#viewer').boundingBox();
  const withOverlay = await anonymous.screenshot({ clip: viewer });
  await anonymous.locator('input[aria-label="overlay opacity"]').fill('0');
  await anonymous.waitForTimeout(500);
  const withoutOverlay = await anonymous.screenshot({ clip: viewer });
  check(!withOverlay.equals(withoutOverlay), 'the overlay is drawn over the slide (opacity 0 changes the view)');

  const prefix = `/api/v1/gallery/${encodeURIComponent(galleryToken)}`;
  const strays = calls.filter((c) => c.method !== 'GET' || !c.path.startsWith(prefix) || c.login || c.query.includes('token'));
  check(calls.length > 3 && strays.length === 0,
    `the page made ${calls.length} API calls, all GETs of the link's routes without a login${strays.length
      ? `; strays: ${JSON.stringify(strays.slice(0, 3))}` : ''}`);
  check(!JSON.stringify(await anonymous.evaluate(() => ({ ...localStorage }))).includes('slidelabel.token'),
    'the anonymous context holds no login');

  step('writes through the link are refused');
  const writes = await anonymous.evaluate(async ([prefix, slideId]) => {
    const statuses = [];
    for (const path of ['', `/slides/${slideId}/overlay.bin`, `/slides/${slideId}/labels`, `/slides/${slideId}/tiles`]) {
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        const response = await fetch(prefix + path, { method, headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ superpixels: [1], category_id: 1 }) });
        statuses.push(response.status);
      }
    }
    return statuses;
  }, [prefix, slide.id]);
  check(writes.every((s) => s === 405), `16 writes through the link: ${[...new Set(writes)].join(', ')}`);
  const after = await http(token, 'GET', `/projects/${project.id}/slides/${slide.id}/labels?user=all`);
  check(after.length === labelCount, `the labels are unchanged (${after.length})`);

  step('the owner revokes the link; it says so');
  owner.once('dialog', (dialog) => dialog.accept());
  await owner.click('.gallery-revoke');
  await owner.waitForSelector('table.gallery-list tr[data-state=revoked]');
  await owner.screenshot({ path: join(shots, 'gallery-04-owner-revoked.png'), fullPage: true });
  await anonymous.reload();
  const gone = await (await anonymous.waitForSelector('#gallery-gone')).textContent();
  check(/this link was revoked or never existed/i.test(gone), `the revoked link says: "${gone.slice(0, 60)}…"`);
  check(await anonymous.locator('#viewer').count() === 0, 'no slide is shown any more');
  await anonymous.screenshot({ path: join(shots, 'gallery-05-revoked.png') });
  const tile = await anonymous.evaluate(async (url) => (await fetch(url)).status,
    `${prefix}/slides/${slide.id}/tiles/0/0/0.jpg`);
  check(tile === 404, `a tile through the revoked link: ${tile}`);
  await anonymous.goto('about:blank');
  await anonymous.goto(`${server.url}/#/gallery/never-issued-${'x'.repeat(30)}`);
  await anonymous.waitForSelector('#gallery-gone');
  check(true, 'a token never issued gets the same page');
  exitCode = failures.length ? 1 : 0;
} catch (error) {
  console.log(`FAIL: ${error.stack ?? error}`);
} finally {
  writeFileSync(join(shots, 'gallery-timings.json'), JSON.stringify({ ...timings, failures }, null, 1));
  console.log(`timings: ${JSON.stringify(timings)}`);
  await browser.close();
  await server.stop();
}
console.log(`${exitCode === 0 ? 'gallery e2e passed' : 'gallery e2e FAILED'}; screenshots in ${shots}`);
process.exit(exitCode);
