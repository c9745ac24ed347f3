// Browser test of segments and features from other tools, in headless Debian Chromium against a
// real `slidelabel serve`: a QuPath-style GeoJSON of MoNuSeg nuclei placed on the CMU slide
// (tests/web/import_fixtures.py writes it, and a TRIDENT-layout HDF5 of patch features) is
// uploaded on the project page with its classifications as labels; the segment count and what
// the import dropped are shown; a second upload is refused in the server's words, a feature file
// without coords fails its job with a one-line reason; the TRIDENT features are imported and chosen as the project's features; the model is trained, cells are
// labelled in guided mode, and the classified cells are exported as QuPath GeoJSON and checked
// against the uploaded polygons here. Screenshots go to SLIDELABEL_E2E_SCREENSHOTS.
//
//   node tests/web/imports.mjs

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PYTHON, SLIDE, api, check, failures, launchBrowser, repo, step } from './browser.mjs';
import { ADMIN_PASSWORD, startServer } from './server.mjs';

const shots = process.env.SLIDELABEL_E2E_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'slidelabel-screens-'));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);
const fixtures = JSON.parse(execFileSync(PYTHON, [join(repo, 'tests/web/import_fixtures.py'),
  mkdtempSync(join(tmpdir(), 'slidelabel-imports-'))], { cwd: repo, encoding: 'utf8' }));
const source = JSON.parse(readFileSync(fixtures.geojson, 'utf8'));

const server = await startServer({ python: PYTHON, repo, slideFolder: dirname(SLIDE) });
const browser = await launchBrowser();

const centroid = (ring) => ring.reduce(([x, y], [u, v]) => [x + u / ring.length, y + v / ring.length], [0, 0]);
const outerRing = (geometry) => (geometry.type === 'Polygon' ? geometry.coordinates[0] : geometry.coordinates[0][0]);
/** The uploaded polygons with at least a ring: their centroid and classification. */
const uploaded = source.features.filter((f) => f.geometry.coordinates.length)
  .map((f) => ({ at: centroid(f.geometry.coordinates[0]), name: f.properties.classification?.name }));
const nearest = ([x, y]) => uploaded.reduce((best, cell) =>
  ((cell.at[0] - x) ** 2 + (cell.at[1] - y) ** 2 < (best.at[0] - x) ** 2 + (best.at[1] - y) ** 2 ? cell : best));

const labelsByName = async (page, projectId) => {
  const summary = (await api(page, 'GET', `/projects/${projectId}/labels/summary`)).body;
  const names = new Map((await api(page, 'GET', `/projects/${projectId}`)).body.categories.map((c) => [c.id, c.name]));
  return Object.fromEntries(summary.categories.filter((c) => c.labels).map((c) => [names.get(c.category_id), c.labels]));
};
const total = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);

let exitCode = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(120_000);
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && console.log(`console: ${message.text()}`));

  step('log in, create a project, add the slide');
  await page.goto(`${server.url}/`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', ADMIN_PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:text("Projects")');
  const name = `imports ${new Date().toISOString()}`;
  await page.fill('input[name=name]', name);
  await page.fill('input[name=categories]', 'tumour, stroma');
  // The fastest registered extractor computes the features the segment import starts with.
  await page.selectOption('form.create select[name=features]', 'color');
  await page.click('form.create button[type=submit]');
  await page.waitForSelector(`h1:text("${name}")`);
  const projectId = Number(/#\/p\/(\d+)/.exec(page.url())[1]);
  await page.selectOption('#server-slide', SLIDE);
  await page.click('#add-slide');
  await page.waitForSelector('table.imports tr[data-slide]');
  const slideId = Number(await page.getAttribute('table.imports tr[data-slide]', 'data-slide'));
  const row = `table.imports tr[data-slide="${slideId}"]`;

  step('upload the GeoJSON of nuclei, its classifications as labels');
  await page.click(`${row} button[data-focus="import-into-${slideId}"]`);
  check(await page.$eval('#segments-slide', (s) => s.value) === String(slideId)
    && await page.evaluate(() => document.activeElement?.id === 'segments-file'),
  'the slide\'s Import segments points the form at it and moves to the file choice');
  await page.setInputFiles('#segments-file', fixtures.geojson);
  await page.check('#segments-labels');
  await page.click('form.import-segments button[type=submit]');
  await page.waitForSelector(`${row} td.segment-import .progress, ${row} td.segment-import .state`);
  await page.screenshot({ path: join(shots, '01-segments-importing.png'), fullPage: true });
  await page.waitForSelector(`${row} td.segment-import .import-summary, ${row} td.segment-import .import-error`,
    { timeout: 300_000 });
  const summary = await page.textContent(`${row} td.segment-import`);
  check(/done/.test(summary), `the segment import job is done: ${JSON.stringify(summary.slice(0, 300))}`);
  await page.waitForSelector(`${row} .imported-segments`);
  const imports = (await api(page, 'GET', `/projects/${projectId}/imports`)).body;
  const segments = imports.slides[0].segments;
  check(segments.segments >= 0.9 * fixtures.polygons && segments.segments <= fixtures.polygons,
    `${segments.segments} segments of ${fixtures.polygons} polygons`);
  check(Number(await page.getAttribute(`${row} .imported-segments`, 'data-segments')) === segments.segments
    && (await page.textContent(`${row} .imported-segments`)).includes(`${segments.segments} segments (geojson) from cells.geojson`),
  'the table shows the segment count and the source');
  const dropped = await page.textContent(`${row} td.dropped`);
  check(/1 outside the slide/.test(dropped) && /1 empty geometry/.test(dropped), `the drop summary: ${dropped}`);
  check(/outside the slide/.test(summary) && /labels: \d+ stroma, \d+ tumour/.test(summary), 'the job summary says what was dropped and labelled');
  const imported = await labelsByName(page, projectId);
  check(imported.tumour === segments.classes.tumour && imported.stroma === segments.classes.stroma
    && imported.tumour >= 0.9 * fixtures.classes.tumour && imported.stroma >= 0.9 * fixtures.classes.stroma,
  `the classifications became labels: ${JSON.stringify(imported)} (uploaded ${JSON.stringify(fixtures.classes)})`);
  await page.screenshot({ path: join(shots, '02-segments-imported.png'), fullPage: true });

  step('a second import into the labelled slide is refused in the server\'s words');
  await page.setInputFiles('#segments-file', fixtures.geojson);
  await page.click('form.import-segments button[type=submit]');
  await page.waitForSelector('.notice.error');
  const refusal = await page.textContent('.notice.error');
  check(/has labels/.test(refusal) && !refusal.includes('\n'), `refused: ${refusal}`);

  step('a feature file without coords fails its job, the table says why in one line');
  await page.fill('#features-name', 'uni-trident');
  await page.setInputFiles(`form.import-features input[data-slide="${slideId}"]`, fixtures.bad_h5);
  await page.click('form.import-features button[type=submit]');
  await page.waitForSelector(`${row} td.feature-import .import-error`, { timeout: 300_000 });
  const failed = (await page.textContent(`${row} td.feature-import .import-error`)).trim();
  check(/^no-coords\.h5 has no coords dataset/.test(failed) && !failed.includes('\n') && !failed.includes(server.dataDir),
    `the failed import's reason: ${failed}`);

  step('import the TRIDENT features and choose them as the project\'s features');
  await page.setInputFiles(`form.import-features input[data-slide="${slideId}"]`, fixtures.h5);
  await page.click('form.import-features button[type=submit]');
  // The newest job's state takes the failed one's place.
  await page.waitForSelector(`${row} td.feature-import .import-error`, { state: 'detached' });
  await page.waitForSelector(`${row} td.feature-import .import-summary, ${row} td.feature-import .import-error`,
    { timeout: 300_000 });
  const featureSummary = await page.textContent(`${row} td.feature-import`);
  check(new RegExp(`${segments.segments} of ${segments.segments} segments got ${fixtures.dims} features`).test(featureSummary),
    `the feature import's summary: ${JSON.stringify(featureSummary.slice(0, 200))}`);
  // Once the import is done the page is drawn again and the feature choice offers it.
  await page.waitForSelector('form.choices select[name=features] option[value="imported-uni-trident"]', { state: 'attached' });
  await page.selectOption('form.choices select[name=features]', 'imported-uni-trident');
  await page.click('form.choices button[type=submit]');
  await page.waitForFunction(() => document.querySelector('form.choices select[name=features]')?.value === 'imported-uni-trident');
  const project = (await api(page, 'GET', `/projects/${projectId}`)).body;
  check(project.extractor === 'imported-uni-trident', `the project computes with ${project.extractor}`);
  check((await page.textContent(`${row} td.features`)).includes(`imported-uni-trident (${fixtures.dims} dims`),
    'the table lists the imported features');
  await page.screenshot({ path: join(shots, '03-features-imported.png'), fullPage: true });

  step('train on the imported labels and features');
  await page.goto(`${server.url}/#/p/${projectId}/slides/${slideId}/label`);
  await page.waitForSelector('.legend .category');
  await page.click('#retrain');
  await page.waitForSelector('.retrain-status .ok', { timeout: 300_000 });
  const epochs = (await api(page, 'GET', `/projects/${projectId}/epochs`)).body;
  check(epochs.length === 1, `epoch 1 trained on ${epochs[0]?.labels} labels`);
  await page.click('input[name=overlay-source][value=predictions]');
  await page.waitForTimeout(2000); // tiles
  await page.screenshot({ path: join(shots, '04-cells-predicted.png') });

  step('label cells in guided mode');
  await page.goto(`${server.url}/#/p/${projectId}/guided`);
  await page.waitForSelector('.guided-strip .card.current img');
  await page.waitForTimeout(1000);
  await page.screenshot({ path: join(shots, '05-guided-cells.png') });
  const before = total(await labelsByName(page, projectId));
  const seen = [];
  for (let i = 0; i < 6; i += 1) {
    const shown = await page.getAttribute('.card.current', 'data-superpixel');
    seen.push(shown);
    await page.keyboard.press(String(1 + (i % 2)));
    await page.waitForFunction((shown) => document.querySelector('.card.current')?.getAttribute('data-superpixel') !== shown,
      shown);
  }
  let after = before;
  for (let i = 0; i < 60 && after < before + 6; i += 1) {
    await page.waitForTimeout(250);
    after = total(await labelsByName(page, projectId));
  }
  check(new Set(seen).size === 6 && after === before + 6, `six guided cells labelled (${before} -> ${after} labels)`);

  step('export the classified cells as QuPath GeoJSON');
  await page.goto(`${server.url}/#/p/${projectId}`);
  await page.waitForSelector(`${row} a[data-export="cells-labels"]`);
  await page.screenshot({ path: join(shots, '06-project-exports.png'), fullPage: true });
  const download = async (key) => (await fetch(new URL(await page.getAttribute(`${row} a[data-export="${key}"]`, 'href'),
    server.url))).json();
  const labelled = await download('cells-labels');
  const classes = labelled.features.map((f) => f.properties.classification.name);
  check(labelled.type === 'FeatureCollection' && labelled.features.length === after
    && classes.every((c) => c === 'tumour' || c === 'stroma'),
  `one classified cell per label: ${labelled.features.length} of ${after}`);
  // Each imported label comes back on its own nucleus: the uploaded polygon nearest to the
  // exported cell has the exported class.
  const matched = labelled.features.filter((f) => {
    const cell = nearest(centroid(outerRing(f.geometry)));
    return cell.name === f.properties.classification.name;
  }).length;
  check(matched >= after - 6, `${matched} of ${after} exported cells have the class of the uploaded nucleus they sit on`);
  const predicted = await download('cells-predictions');
  check(predicted.features.length === segments.segments
    && predicted.features.every((f) => ['tumour', 'stroma'].includes(f.properties.classification.name)),
  `every segment exported with its predicted class: ${predicted.features.length}`);
  exitCode = failures.length ? 1 : 0;
} catch (error) {
  console.log(`FAIL: ${error.stack ?? error}`);
} finally {
  await browser.close();
  await server.stop();
}
console.log(`${exitCode === 0 ? 'imports passed' : 'imports FAILED'}; screenshots in ${shots}`);
process.exit(exitCode);
