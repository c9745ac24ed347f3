// Browser test of the shape tools and the learning dashboard, in headless Debian Chromium against
// a real `slidelabel serve` on the CMU sample cut into ~6,000 superpixels of 10 um: a polygon and
// a lasso label exactly the superpixels the server says they cover (checked against the labels
// the server stored), Alt subtracts, undo restores; a 500-vertex polygon over the whole slide is
// timed from double-click to recoloured overlay; Shift-click grows to similar (by features before
// any epoch, by predictions after one), Enter accepts; the smart tool (no Segment Anything weights:
// the server says basis classical, and the same regions at three scales) proposes where the cursor rests, the wheel and right-click cycle, a click labels; the dashboard draws the reliability
// diagram, the learning curve and the stopping sentence of seeded epochs; the project page
// changes the normalisation. Screenshots go to SLIDELABEL_E2E_SCREENSHOTS (or a new folder).
//
//   node tests/web/shapes.mjs

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  PYTHON, SLIDE, api, check, durations, failures, labelsWhen, launchBrowser, median, nodeApi, repo, serverLabels, step,
  waitFor,
} from './browser.mjs';
import { ADMIN_PASSWORD, startServer } from './server.mjs';

const shots = process.env.SLIDELABEL_E2E_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'slidelabel-shapes-'));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);

const server = await startServer({ python: PYTHON, repo, slideFolder: dirname(SLIDE) });
const browser = await launchBrowser();
const http = nodeApi(server.url);

const sameSet = (a, b) => a.size === b.size && [...a].every((x) => b.has(x));
const sameLabels = (a, b) => a.size === b.size && [...a].every(([id, c]) => b.get(id) === c);
const idsOf = (labels, category) => new Set([...labels].filter(([, c]) => c === category).map(([id]) => id));

/** The next answer of a shape route: request body and response. */
function nextShapeCall(page, route) {
  return page.waitForResponse((r) => r.url().includes(`/shapes/${route}`) && r.ok()).then(async (response) => ({
    request: response.request().postDataJSON?.() ?? null, url: response.url(), body: await response.json() }));
}

/** Screen points of a closed curve around `centre`: `n` vertices, radius wobbling by `wobble`. */
function ring(centre, radius, n, wobble = 0) {
  return Array.from({ length: n }, (_, i) => {
    const a = (2 * Math.PI * i) / n;
    const r = 1 + wobble * Math.sin(5 * a);
    return { x: centre.x + r * radius.x * Math.cos(a), y: centre.y + r * radius.y * Math.sin(a) };
  });
}

async function drawPolygon(page, points, { alt = false } = {}) {
  if (alt) await page.keyboard.down('Alt');
  for (const p of points.slice(0, -1)) await page.mouse.click(p.x, p.y);
  const last = points[points.length - 1];
  await page.mouse.dblclick(last.x, last.y);
  if (alt) await page.keyboard.up('Alt');
}

async function drawLasso(page, points, { alt = false } = {}) {
  if (alt) await page.keyboard.down('Alt');
  await page.mouse.move(points[0].x, points[0].y);
  await page.mouse.down();
  for (const p of points.slice(1)) await page.mouse.move(p.x, p.y);
  await page.mouse.up();
  if (alt) await page.keyboard.up('Alt');
}

const timings = {};
let exitCode = 1;
try {
  step('a project on the CMU sample with 10 um superpixels, prepared through the API');
  const token = (await http(null, 'POST', '/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).token;
  const project = await http(token, 'POST', '/projects', {
    name: 'shapes', superpixels: { size: '10um' },
    categories: [{ name: 'tumour' }, { name: 'stroma' }, { name: 'glass' }] });
  const [tumour, stroma] = project.categories.map((c) => c.id);
  const slide = (await http(token, 'POST', `/projects/${project.id}/slides`, { path: SLIDE })).added[0];
  await http(token, 'POST', `/projects/${project.id}/jobs/prepare`);
  const ready = await waitFor('the slide\'s superpixels and features', async () => {
    const [s] = await http(token, 'GET', `/projects/${project.id}/slides`);
    if ([s.superpixels_job?.state, s.features_job?.state].includes('failed')) throw new Error('prepare failed');
    return s.features_job?.state === 'done' && s.superpixels ? s : null;
  });
  check(ready.superpixels >= 5000, `${ready.superpixels} superpixels`);

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && console.log(`console: ${message.text()}`));
  await page.goto(`${server.url}/`);
  await page.evaluate((token) => localStorage.setItem('slidelabel.token', token), token);
  await page.goto(`${server.url}/#/p/${project.id}/slides/${slide.id}/label`);
  await page.reload(); // the app reads the token when it starts
  await page.waitForSelector('.legend .category');
  await page.waitForTimeout(2500); // tiles
  const viewer = await page.locator('#viewer').boundingBox();
  const centre = { x: viewer.x + viewer.width / 2, y: viewer.y + viewer.height / 2 };

  step('polygon: click vertices, double-click closes');
  await page.keyboard.press('1');
  await page.keyboard.press('p');
  const polygon = ring({ x: centre.x - 60, y: centre.y - 40 }, { x: 150, y: 110 }, 9, 0.15);
  const covered = nextShapeCall(page, 'cover');
  await page.mouse.click(polygon[0].x, polygon[0].y);
  for (const p of polygon.slice(1, 5)) await page.mouse.click(p.x, p.y);
  await page.mouse.move(polygon[5].x, polygon[5].y);
  await page.screenshot({ path: join(shots, 'polygon-drawing.png') });
  for (const p of polygon.slice(5, -1)) await page.mouse.click(p.x, p.y);
  await page.mouse.dblclick(polygon[8].x, polygon[8].y);
  const polygonCall = await covered;
  check(polygonCall.request.polygon_level0.length === 9, `the polygon went to the server with its 9 vertices`);
  const polygonIds = new Set(polygonCall.body.superpixels);
  let labels = await labelsWhen(page, project.id, slide.id, (l) => l.size === polygonIds.size);
  check(polygonIds.size > 20 && sameSet(idsOf(labels, tumour), polygonIds) && labels.size === polygonIds.size,
    `the polygon labelled exactly the ${polygonIds.size} superpixels it covers (server: ${labels.size})`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'polygon-labelled.png') });

  step('lasso: drag a loop');
  await page.keyboard.press('2');
  await page.keyboard.press('f');
  const loop = ring({ x: centre.x + 200, y: centre.y + 120 }, { x: 110, y: 80 }, 60, 0.1);
  const lassoed = nextShapeCall(page, 'cover');
  await drawLasso(page, [...loop, loop[0]]);
  const lassoCall = await lassoed;
  const lassoIds = new Set(lassoCall.body.superpixels);
  labels = await labelsWhen(page, project.id, slide.id, (l) => sameSet(idsOf(l, stroma), lassoIds));
  check(lassoIds.size > 20 && sameSet(idsOf(labels, stroma), lassoIds) && sameSet(idsOf(labels, tumour), polygonIds),
    `the lasso labelled exactly its ${lassoIds.size} superpixels as stroma; the polygon's stay tumour`);
  await page.screenshot({ path: join(shots, 'lasso-labelled.png') });

  step('Alt subtracts, undo restores');
  await page.keyboard.press('p');
  const cut = ring({ x: centre.x - 60, y: centre.y - 40 }, { x: 70, y: 50 }, 6);
  const subtracted = nextShapeCall(page, 'cover');
  await drawPolygon(page, cut, { alt: true });
  const cutIds = new Set((await subtracted).body.superpixels);
  const left = new Set([...polygonIds].filter((id) => !cutIds.has(id)));
  labels = await labelsWhen(page, project.id, slide.id, (l) => sameSet(idsOf(l, tumour), left));
  check(cutIds.size > 5 && left.size < polygonIds.size && sameSet(idsOf(labels, tumour), left),
    `Alt+polygon removed ${polygonIds.size - left.size} tumour labels, the ${left.size} outside it stay`);
  await page.screenshot({ path: join(shots, 'polygon-subtracted.png') });
  await page.keyboard.press('Control+z');
  labels = await labelsWhen(page, project.id, slide.id, (l) => sameSet(idsOf(l, tumour), polygonIds));
  check(sameSet(idsOf(labels, tumour), polygonIds), 'undo restores every label the subtraction removed, in one step');
  await page.keyboard.press('Control+z');
  labels = await labelsWhen(page, project.id, slide.id, (l) => idsOf(l, stroma).size === 0);
  check(idsOf(labels, stroma).size === 0 && sameSet(idsOf(labels, tumour), polygonIds), 'a second undo takes the whole lasso back');
  await page.keyboard.press('Control+y');

  step('a 500-vertex polygon over the whole slide, timed to the recoloured overlay');
  await page.keyboard.press('0');
  await page.waitForTimeout(1500);
  await page.keyboard.press('3');
  await page.keyboard.press('p');
  const whole = ring(centre, { x: viewer.width * 0.47, y: viewer.height * 0.47 }, 500, 0.02);
  for (let run = 0; run < 3; run += 1) {
    const big = nextShapeCall(page, 'cover');
    await drawPolygon(page, whole, { alt: run === 1 }); // label, remove, label again
    const ids = (await big).body.superpixels;
    check(ids.length >= 5000, `run ${run + 1}: the 500-vertex polygon covers ${ids.length} superpixels`);
    await page.waitForTimeout(800);
  }
  await page.screenshot({ path: join(shots, 'polygon-500-vertices.png') });
  timings.polygon500ToOverlayMs = await durations(page, 'shape-to-overlay').then((d) => d.slice(-3));
  timings.polygon500ServerMs = await durations(page, 'shape-cover-response').then((d) => d.slice(-3));
  timings.polygon500PreviewToOverlayMs = await durations(page, 'shape-preview-to-overlay').then((d) => d.slice(-3));

  step('grow to similar by features (no epoch yet)');
  await page.keyboard.press('Control+z'); // the whole-slide labels, so that grown labels show
  await page.keyboard.press('Control+z');
  await page.keyboard.press('Control+z');
  await page.keyboard.press('v');
  await page.keyboard.press('2');
  for (let i = 0; i < 3; i += 1) await page.keyboard.press('+');
  await page.waitForTimeout(1500);
  labels = await labelsWhen(page, project.id, slide.id, (l) => sameSet(idsOf(l, tumour), polygonIds)
    && sameSet(idsOf(l, stroma), lassoIds) && l.size === polygonIds.size + lassoIds.size, 30_000);
  check(sameSet(idsOf(labels, tumour), polygonIds) && sameSet(idsOf(labels, stroma), lassoIds)
    && labels.size === polygonIds.size + lassoIds.size, 'three undos take the whole-slide polygons back');
  const before = labels.size;
  let grown = nextShapeCall(page, 'grow');
  await page.keyboard.down('Shift');
  await page.mouse.click(centre.x + 40, centre.y + 30);
  await page.keyboard.up('Shift');
  const byFeatures = (await grown).body;
  await page.waitForSelector('#grow-panel .grow-count');
  const shown = Number(await page.getAttribute('#grow-panel .grow-count', 'data-count'));
  check(byFeatures.basis === 'features' && shown === byFeatures.superpixels.length && shown > 1,
    `Shift-click proposes ${shown} similar superpixels by features`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'grow-by-features.png') });
  await page.keyboard.press('Escape');
  check(await page.isHidden('#grow-panel'), 'Esc drops the proposal');
  check((await serverLabels(page, project.id, slide.id)).size === before, 'a dropped proposal labels nothing');

  step('grow to similar by the predictions of an epoch');
  const job = await http(token, 'POST', `/projects/${project.id}/epochs`);
  await waitFor('the epoch', async () => {
    const state = (await http(token, 'GET', `/projects/${project.id}/jobs/${job.id}`)).state;
    if (state === 'failed') throw new Error('the epoch failed');
    return state === 'done';
  });
  await page.reload();
  await page.waitForSelector('.legend .category');
  await page.waitForTimeout(2500);
  await page.keyboard.press('2');
  for (let i = 0; i < 3; i += 1) await page.keyboard.press('+');
  await page.waitForTimeout(1500);
  const seedPoint = { x: centre.x + 40, y: centre.y + 30 };
  grown = nextShapeCall(page, 'grow');
  await page.keyboard.down('Shift');
  await page.mouse.click(seedPoint.x, seedPoint.y);
  await page.keyboard.up('Shift');
  const byPredictions = (await grown).body;
  await page.waitForSelector('#grow-panel .grow-count');
  check(byPredictions.basis === 'predictions' && byPredictions.epoch === 1,
    `after epoch 1 it grows by predictions (${byPredictions.superpixels.length} superpixels predicted ` +
    `${byPredictions.category_id === tumour ? 'tumour' : 'stroma'} with certainty ≥ 0.8)`);
  // Reach: fewer neighbour steps, fewer superpixels.
  const maxSteps = Math.max(...byPredictions.steps);
  const reach = Math.max(1, Math.floor(maxSteps / 2));
  await page.$eval('input[name=grow-reach]', (input, reach) => {
    input.value = String(reach);
    input.dispatchEvent(new Event('input'));
  }, reach);
  const expected = new Set(byPredictions.superpixels.filter((_, i) => byPredictions.steps[i] <= reach));
  const count = Number(await page.getAttribute('#grow-panel .grow-count', 'data-count'));
  check(count === expected.size, `the reach slider at ${reach} of ${maxSteps} steps keeps ${count} superpixels`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'grow-by-predictions.png') });
  const already = await serverLabels(page, project.id, slide.id);
  await page.keyboard.press('Enter');
  labels = await labelsWhen(page, project.id, slide.id, (l) => [...expected].every((id) => l.get(id) === stroma));
  const added = [...labels.keys()].filter((id) => !already.has(id) || already.get(id) !== labels.get(id));
  check([...expected].every((id) => labels.get(id) === stroma) && added.every((id) => expected.has(id)),
    `Enter labelled the ${expected.size} proposed superpixels as stroma, and nothing else`);
  await page.keyboard.press('Control+z');
  labels = await labelsWhen(page, project.id, slide.id, (l) => sameLabels(l, already));
  check(sameLabels(labels, already), 'undo takes the grown region back in one step');

  step('smart tool without a model: regions at three scales where the cursor rests');
  const scaleAnswers = [];
  page.on('response', async (r) => {
    if (r.url().includes('/shapes/scales') && r.ok()) scaleAnswers.push(await r.json());
  });
  const embedAnswer = page.waitForResponse((r) => r.url().includes('/shapes/sam/embed') && r.ok());
  await page.keyboard.press('1');
  await page.keyboard.press('s');
  const smartBasis = (await (await embedAnswer).json()).basis;
  check(smartBasis === 'classical', `with no Segment Anything weights the server answers basis ${smartBasis}`);
  const rests = (await durations(page, 'smart-rest-to-outline')).length;
  for (let i = 0; i < 7; i += 1) {
    // Counted before each rest: a rest that asks for nothing (glass) must not make every later wait
    // for one outline too many (each then ran into its timeout: 100 s).
    const before = (await durations(page, 'smart-rest-to-outline')).length;
    await page.mouse.move(centre.x - 240 + i * 70, centre.y - 160 + (i % 2) * 60, { steps: 2 });
    await page.waitForFunction((n) => performance.getEntriesByName('smart-rest-to-outline').length > n, before,
      { timeout: 5_000 }).catch(() => undefined);
    await page.waitForTimeout(150);
  }
  timings.smartRestToOutlineMs = (await durations(page, 'smart-rest-to-outline')).slice(rests);
  // A rest on glass, or on the superpixel already proposed, asks for nothing.
  check(timings.smartRestToOutlineMs.length >= 5, `7 rests gave ${timings.smartRestToOutlineMs.length} proposals`);
  const hint = async () => page.$eval('#smart-hint', (e) => [Number(e.dataset.scale), Number(e.dataset.count)]);
  const scales = scaleAnswers[scaleAnswers.length - 1].map((g) => g.superpixels);
  check(JSON.stringify(await hint()) === JSON.stringify([1, scales[0].length]) && scales[0].length >= 1,
    `resting shows scale 1: ${scales[0].length} superpixels`);
  await page.mouse.wheel(0, 100);
  check(JSON.stringify(await hint()) === JSON.stringify([2, scales[1].length]), `the wheel shows scale 2: ${scales[1].length}`);
  await page.mouse.click(centre.x - 240 + 6 * 70, centre.y - 160, { button: 'right' });
  check(JSON.stringify(await hint()) === JSON.stringify([3, scales[2].length]) && scales[2].length >= scales[0].length,
    `a right-click shows scale 3: ${scales[2].length}`);
  await page.screenshot({ path: join(shots, 'smart-scale-3.png') });
  const beforeSmart = await serverLabels(page, project.id, slide.id);
  await page.mouse.click(centre.x - 240 + 6 * 70, centre.y - 160);
  labels = await labelsWhen(page, project.id, slide.id, (l) => scales[2].every((id) => l.get(id) === tumour));
  const smartAdded = [...labels.keys()].filter((id) => beforeSmart.get(id) !== labels.get(id));
  check(scales[2].every((id) => labels.get(id) === tumour) && smartAdded.every((id) => scales[2].includes(id)),
    `a click labelled the ${scales[2].length} superpixels of scale 3 as tumour, and nothing else`);

  step('dashboard: seeded epochs with calibration, estimated accuracy and the stopping signal');
  const bins = [[0.55, 0.5, 12], [0.65, 0.61, 20], [0.75, 0.77, 31], [0.85, 0.83, 64], [0.95, 0.94, 150]]
    .map(([confidence, accuracy, count]) => ({ confidence, accuracy, count }));
  // After epoch 1's labels, so that the curve's points follow in epoch order too.
  const base = (await http(token, 'GET', `/projects/${project.id}/epochs`))[0].labels;
  const seeded = [
    { number: 2, labels: base + 50, metrics: { estimated_accuracy: { value: 0.71, low: 0.62, high: 0.79, n: 50 } } },
    { number: 3, labels: base + 120, metrics: { estimated_accuracy: { value: 0.86, low: 0.8, high: 0.9, n: 120 },
      changed_fraction: 0.031 } },
    { number: 4, labels: base + 170, metrics: {
      calibration: { method: 'temperature', temperature: 1.62, ece_before: 0.087, ece: 0.021, bins },
      estimated_accuracy: { value: 0.91, low: 0.89, high: 0.93, n: 170 }, changed_fraction: 0.004,
      stopping: { sentence: 'The last 50 labels changed 0.4% of predictions; estimated accuracy 0.91 ± 0.02.', plateau: true },
    } },
  ];
  const seeding = spawnSync(PYTHON, [join(repo, 'tests/web/seed_epochs.py'), server.dataDir, String(project.id),
    JSON.stringify(seeded)], { cwd: repo, encoding: 'utf8' });
  check(seeding.status === 0, `epochs 2-4 seeded ${seeding.stderr.slice(-300)}`);
  await page.goto(`${server.url}/#/p/${project.id}/dashboard`);
  await page.waitForSelector('.learning .reliability-diagram');
  const drawnBins = await page.$$eval('.reliability-diagram rect.bin', (rects) => rects.map((r) =>
    [Number(r.dataset.confidence), Number(r.dataset.accuracy), Number(r.dataset.count)]));
  check(JSON.stringify(drawnBins) === JSON.stringify(bins.map((b) => [b.confidence, b.accuracy, b.count])),
    `the reliability diagram draws the 5 bins of epoch 4`);
  const caption = await page.textContent('.reliability-diagram .chart-note');
  check(caption.includes('0.087 before') && caption.includes('0.021 after') && caption.includes('T = 1.62'),
    `the diagram gives ECE before and after: "${caption}"`);
  const points = await page.$$eval('.learning-curve circle.point', (cs) => cs.filter((c) => Number(c.dataset.epoch) > 1)
    .map((c) => [Number(c.dataset.labels), Number(c.dataset.value), Number(c.dataset.low), Number(c.dataset.high)]));
  check(JSON.stringify(points) === JSON.stringify(seeded.map((e) => [e.labels, e.metrics.estimated_accuracy.value,
    e.metrics.estimated_accuracy.low, e.metrics.estimated_accuracy.high])),
  `the learning curve has one point per seeded epoch at its labels and accuracy (${points.length} points)`);
  const panel = await page.textContent('#stopping');
  check(await page.$eval('#stopping', (e) => e.classList.contains('plateau'))
    && panel.includes(seeded[2].metrics.stopping.sentence) && panel.includes('changed since the previous epoch: 0.4%')
    && panel.includes('estimated accuracy 0.91 ± 0.02 (170 out-of-fold predictions)'),
  `the stopping panel is prominent and says: "${panel}"`);
  await page.screenshot({ path: join(shots, 'dashboard-learning.png'), fullPage: true });
  await page.locator('.learning').screenshot({ path: join(shots, 'dashboard-panels.png') });

  step('project page: the normalisation setting');
  await page.goto(`${server.url}/#/p/${project.id}`);
  const registry = await api(page, 'GET', '/registry');
  const normalisations = registry.body.normalisations ?? [];
  if (normalisations.length > 1) {
    await page.waitForSelector('select[name=normalisation]');
    const shownNow = await page.$eval('select[name=normalisation]', (s) => s.value);
    check(shownNow === project.normalisation, `the page shows the project's normalisation (${shownNow})`);
    const other = normalisations.find((n) => n.name !== shownNow).name;
    await page.selectOption('select[name=normalisation]', other);
    await page.click('form.choices button[type=submit]');
    const saved = await waitFor('the saved normalisation', async () =>
      (await api(page, 'GET', `/projects/${project.id}`)).body.normalisation === other, 15_000);
    check(saved, `Save changed the project's normalisation to ${other}`);
    const defaults = ['features', 'models', 'strategies', 'normalisations'].map((k) =>
      registry.body[k].find((e) => e.default)?.name);
    check(defaults.every(Boolean) && project.extractor === defaults[0] && project.model === defaults[1]
      && project.strategy === defaults[2], `the registry marks the defaults (${defaults.join(', ')})`);
  } else {
    console.log('skipped: the server lists fewer than two normalisations');
  }
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
console.log(`${exitCode === 0 ? 'shapes e2e passed' : 'shapes e2e FAILED'}; screenshots in ${shots}`);
process.exit(exitCode);
