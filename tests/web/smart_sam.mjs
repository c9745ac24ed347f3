// Browser test of the smart tool with a Segment Anything model, in headless Debian Chromium against
// a real `slidelabel serve` whose SLIDELABEL_SAM_MODEL is a tiny random SamModel (made here with
// tests/web/tiny_sam.py unless the variable names one): choosing S embeds the region in view;
// resting the cursor draws the mask's outline (timed from the rest to the painted frame, median
// printed; the target is 150 ms); the wheel and right-click cycle the three scales; a
// click labels exactly the superpixels the server said the shown mask covers, in one undoable
// batch. Screenshots go to SLIDELABEL_E2E_SCREENSHOTS (or a new folder).
//
//   node tests/web/smart_sam.mjs

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  PYTHON, SLIDE, check, durations, failures, labelsWhen, launchBrowser, median, nodeApi, repo, step, waitFor,
} from './browser.mjs';
import { ADMIN_PASSWORD, startServer } from './server.mjs';

const shots = process.env.SLIDELABEL_E2E_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'slidelabel-smart-'));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);
if (!process.env.SLIDELABEL_SAM_MODEL) {
  const folder = join(mkdtempSync(join(tmpdir(), 'slidelabel-sam-')), 'tiny');
  const made = spawnSync(PYTHON, [join(repo, 'tests/web/tiny_sam.py'), folder], { cwd: repo, encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`tiny_sam.py failed: ${made.stderr}`);
  process.env.SLIDELABEL_SAM_MODEL = folder; // the server inherits it
}

const server = await startServer({ python: PYTHON, repo, slideFolder: dirname(SLIDE) });
const browser = await launchBrowser();

const http = nodeApi(server.url);

const timings = {};
let exitCode = 1;
try {
  step('a project on the CMU sample, its superpixels computed through the API');
  const token = (await http(null, 'POST', '/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).token;
  const project = await http(token, 'POST', '/projects', {
    name: 'smart', extractor: 'color', categories: [{ name: 'tumour' }, { name: 'stroma' }] });
  const [tumour] = project.categories.map((c) => c.id);
  const slide = (await http(token, 'POST', `/projects/${project.id}/slides`, { path: SLIDE })).added[0];
  await http(token, 'POST', `/projects/${project.id}/jobs/prepare`);
  await waitFor('the slide\'s superpixels', async () => {
    const [s] = await http(token, 'GET', `/projects/${project.id}/slides`);
    if (s.superpixels_job?.state === 'failed') throw new Error('superpixels failed');
    return s.superpixels_job?.state === 'done' && s.superpixels ? s : null;
  });

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && console.log(`console: ${message.text()}`));
  const suggestions = [];
  page.on('response', async (r) => {
    if (r.url().includes('/shapes/sam/suggest') && r.ok()) suggestions.push(await r.json());
  });
  await page.goto(`${server.url}/`);
  await page.evaluate((token) => localStorage.setItem('slidelabel.token', token), token);
  await page.goto(`${server.url}/#/p/${project.id}/slides/${slide.id}/label`);
  await page.reload();
  await page.waitForSelector('.legend .category');
  await page.waitForTimeout(2500); // tiles
  const viewer = await page.locator('#viewer').boundingBox();
  const centre = { x: viewer.x + viewer.width / 2, y: viewer.y + viewer.height / 2 };

  step('S embeds the region in view');
  await page.keyboard.press('1');
  const embedded = page.waitForResponse((r) => r.url().includes('/shapes/sam/embed') && r.ok());
  await page.keyboard.press('s');
  const embed = await (await embedded).json();
  check(embed.basis === 'sam' && embed.region_level0 !== null,
    `the server embedded the view ${JSON.stringify(embed.region_level0)} with SAM in ${embed.seconds?.toFixed(2)} s`);

  step('resting the cursor draws the outline of the mask there');
  await page.waitForTimeout(300);
  const rests = [];
  for (let i = 0; i < 9; i += 1) {
    const at = { x: centre.x - 300 + (i % 3) * 300, y: centre.y - 200 + Math.floor(i / 3) * 200 };
    const before = (await durations(page, 'smart-rest-to-outline')).length;
    await page.mouse.move(at.x, at.y, { steps: 2 });
    await page.waitForFunction((n) => performance.getEntriesByName('smart-rest-to-outline').length > n, before,
      { timeout: 15_000 }).catch(() => undefined);
    await page.waitForTimeout(100);
    rests.push(at);
  }
  timings.samRestToOutlineMs = await durations(page, 'smart-rest-to-outline');
  timings.samEmbedMs = await durations(page, 'smart-embed');
  // Where a rest's time goes: the rest that tells it from a move (35 ms), the request (server
  // decode, outlines, coverage and HTTP), and the answer to the painted frame.
  timings.samRequestMs = await durations(page, 'smart-request');
  timings.samAnswerToOutlineMs = await durations(page, 'smart-answer-to-outline');
  check(timings.samRestToOutlineMs.length >= 7, `9 rests drew ${timings.samRestToOutlineMs.length} outlines`);
  const drawn = await page.$eval('.shape-layer.suggestion', (svg) => [getComputedStyle(svg).display,
    svg.querySelector('.outline').getAttribute('points').split(' ').length]);
  check(drawn[0] === 'block' && drawn[1] >= 4, `the outline is painted (${drawn[1]} screen vertices)`);
  console.log(`cursor rest to outline painted: median ${median(timings.samRestToOutlineMs).toFixed(1)} ms ` +
    `(target < 150 ms, tiny model) over ${timings.samRestToOutlineMs.length} rests; request median ` +
    `${median(timings.samRequestMs).toFixed(1)} ms, answer to painted ${median(timings.samAnswerToOutlineMs).toFixed(1)} ms`);

  step('the wheel and right-click cycle the scales; a click labels the shown mask\'s superpixels');
  const hint = async () => page.$eval('#smart-hint', (e) => [e.dataset.basis, Number(e.dataset.scale),
    Number(e.dataset.count)]);
  // Rest where some scale covers superpixels, and show that scale.
  let target = null;
  for (const at of [...rests].reverse()) {
    const answers = suggestions.length;
    await page.mouse.move(at.x + 5, at.y + 5, { steps: 2 });
    await waitFor('a suggestion', async () => suggestions.length > answers, 15_000).catch(() => undefined);
    await page.waitForTimeout(100);
    const last = suggestions[suggestions.length - 1];
    const scale = last.scales.findIndex((s) => s.superpixels.length > 0);
    if (scale >= 0) {
      target = { at: { x: at.x + 5, y: at.y + 5 }, scales: last.scales, scale };
      break;
    }
  }
  check(target !== null, 'a rest found a mask covering superpixels');
  const [basis, shownScale] = await hint();
  check(basis === 'sam', `the hint says the basis is ${basis}`);
  await page.mouse.wheel(0, 100);
  const [, wheeled] = await hint();
  check(wheeled === (shownScale % 3) + 1, `the wheel shows scale ${wheeled} after ${shownScale}`);
  await page.mouse.click(target.at.x, target.at.y, { button: 'right' });
  let [, now, count] = await hint();
  check(now === (wheeled % 3) + 1, `a right-click shows scale ${now}`);
  for (let i = 0; i < 3 && now !== target.scale + 1; i += 1) {
    await page.mouse.wheel(0, 100);
    [, now, count] = await hint();
  }
  const ids = target.scales[target.scale].superpixels;
  check(now === target.scale + 1 && count === ids.length, `scale ${now} shows its ${count} superpixels`);
  await page.screenshot({ path: join(shots, 'smart-sam-outline.png') });
  await page.mouse.click(target.at.x, target.at.y);
  const labels = await labelsWhen(page, project.id, slide.id, (l) => ids.every((id) => l.get(id) === tumour));
  check(labels.size === ids.length && ids.every((id) => labels.get(id) === tumour),
    `a click labelled exactly the ${ids.length} superpixels the server said the mask covers (server: ${labels.size})`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'smart-sam-labelled.png') });
  await page.keyboard.press('Control+z');
  const undone = await labelsWhen(page, project.id, slide.id, (l) => l.size === 0);
  check(undone.size === 0, 'undo takes the whole suggestion back in one step');
  exitCode = failures.length ? 1 : 0;
} catch (error) {
  console.log(`FAIL: ${error.stack ?? error}`);
} finally {
  const medians = Object.fromEntries(Object.entries(timings).map(([key, values]) =>
    [key.replace(/Ms$/, 'MedianMs'), values.length ? Number(median(values).toFixed(1)) : null]));
  const summary = { ...medians, ...timings, failures };
  writeFileSync(join(shots, 'timings.json'), JSON.stringify(summary, null, 1));
  console.log(`timings: ${JSON.stringify(summary)}`);
  await browser.close();
  await server.stop();
}
console.log(`${exitCode === 0 ? 'smart SAM e2e passed' : 'smart SAM e2e FAILED'}; screenshots in ${shots}`);
process.exit(exitCode);
