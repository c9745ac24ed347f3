// The browser half of benchmarks/objects_browser.py: logs in to a running `slidelabel serve`,
// opens the labelling view of one slide in headless Chromium (tests/web/browser.mjs), labels cells
// by click (the app's `label-to-overlay` measure) and by brush (a stroke's mouse move to the end of
// the frame that shows it), and prints one line of JSON.
//
//   node benchmarks/objects_browser.mjs URL USER PASSWORD PROJECT SLIDE SIDE_PX CLICKS STROKES

import { writeFileSync } from 'node:fs';
import { durations, launchBrowser, median } from '../tests/web/browser.mjs';

const [url, user, password, projectId, slideId, side, clicks, strokes] = process.argv.slice(2);
const p95 = (values) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * 0.95))];
const summary = (values) => ({
  median: +median(values).toFixed(1), p95: +p95(values).toFixed(1), n: values.length, in_order: values.map((v) => +v.toFixed(1)) });

const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(300_000);
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${url}/`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:text("Projects")');

  // SLIDELABEL_BENCH_PROFILE=PATH: a CPU profile from opening the view to the end of the labelling for Chrome's DevTools.
  const profiler = process.env.SLIDELABEL_BENCH_PROFILE ? await page.context().newCDPSession(page) : null;
  if (profiler) {
    await profiler.send('Profiler.enable');
    await profiler.send('Profiler.start');
  }
  // Time to the first overlay: from opening the view to the first index tile drawn with the
  // colour table in place (the legend shows once the session has its table and labels).
  const opened = Date.now();
  const firstIndexTile = page.waitForResponse((r) => r.url().includes('/superpixel-tiles/'));
  await page.goto(`${url}/#/p/${projectId}/slides/${slideId}/label`);
  await page.waitForSelector('.legend .category');
  const legendMs = Date.now() - opened;
  await firstIndexTile;
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  const firstOverlayMs = Date.now() - opened;
  await page.waitForTimeout(2500); // the rest of the tiles

  const viewer = await page.locator('#viewer').boundingBox();
  const centre = { x: viewer.x + viewer.width / 2, y: viewer.y + viewer.height / 2 };
  // Zoom in (+: half a level) from the whole slide to 2 level-0 px per screen pixel, where a cell
  // (about 25 px) is a dozen screen pixels wide.
  const presses = Math.max(0, Math.round(2 * Math.log2(Number(side) / viewer.height / 2)));
  await page.mouse.move(centre.x, centre.y);
  for (let i = 0; i < presses; i += 1) await page.keyboard.press('+');
  await page.waitForTimeout(4000); // the tiles of the new view

  await page.keyboard.press('1');
  for (let i = 0; i < Number(clicks); i += 1) {
    const dx = ((i % 10) - 5) * 60;
    const dy = (Math.floor(i / 10) % 6 - 3) * 60;
    await page.mouse.click(centre.x + dx, centre.y + dy);
    await page.waitForTimeout(150);
  }
  const clickMs = await durations(page, 'label-to-overlay');

  // Brush: each mouse move of a stroke recolours the cells it reaches; timed from the move's
  // event to the frame that shows it, the way the app's label-to-overlay measure is: once with
  // 150 ms between moves (as the clicks), once with the moves back to back, where each waits
  // for the frame before it (on this software GPU, the shading of the whole view).
  await page.keyboard.press('2');
  await page.keyboard.press('b');
  const stroke = async (y, pauseMs) => {
    const times = [];
    await page.mouse.move(centre.x - 300, y);
    await page.mouse.down();
    for (let k = 1; k <= 12; k += 1) {
      if (pauseMs) await page.waitForTimeout(pauseMs);
      times.push(await page.evaluate(([x, y]) => new Promise((resolve) => {
        const start = performance.now();
        window.dispatchEvent(new MouseEvent('mousemove', { clientX: x, clientY: y, bubbles: true }));
        requestAnimationFrame(() => resolve(performance.now() - start));
      }), [centre.x - 300 + k * 45, y]));
    }
    await page.mouse.up();
    await page.waitForTimeout(300);
    return times;
  };
  const brushMs = [];
  const brushContinuousMs = [];
  for (let s = 0; s < Number(strokes); s += 1) {
    brushMs.push(...await stroke(centre.y - 200 + s * 100, 150));
    brushContinuousMs.push(...await stroke(centre.y - 150 + s * 100, 0));
  }
  if (profiler) {
    const { profile } = await profiler.send('Profiler.stop');
    writeFileSync(process.env.SLIDELABEL_BENCH_PROFILE, JSON.stringify(profile));
  }
  if (process.env.SLIDELABEL_BENCH_SCREENSHOT) await page.screenshot({ path: process.env.SLIDELABEL_BENCH_SCREENSHOT });
  // The live heap: what is left after a full garbage collection.
  const devtools = await page.context().newCDPSession(page);
  await devtools.send('HeapProfiler.collectGarbage');
  const heap = await page.evaluate(() => performance.memory && {
    used: performance.memory.usedJSHeapSize, total: performance.memory.totalJSHeapSize });
  const labelled = await page.evaluate(async ([p, s]) => {
    const response = await fetch(`/api/v1/projects/${p}/slides/${s}/labels.bin?view=mine`, {
      headers: { Authorization: `Bearer ${localStorage.getItem('slidelabel.token')}` } });
    const counts = {};
    for (const v of new Uint32Array(await response.arrayBuffer())) if (v) counts[v] = (counts[v] ?? 0) + 1;
    return counts;
  }, [projectId, slideId]);
  // What else a labeller waits for on this slide, fetched by the page after the labelling (ms, body bytes).
  const server = await page.evaluate(async ([p, s]) => {
    const slide = `/api/v1/projects/${p}/slides/${s}`;
    const timed = async (path, init = {}) => {
      const start = performance.now();
      const response = await fetch(path, { ...init, headers: {
        Authorization: `Bearer ${localStorage.getItem('slidelabel.token')}`, 'Content-Type': 'application/json' } });
      const body = await response.arrayBuffer();
      return { ms: +(performance.now() - start).toFixed(1), status: response.status, bytes: body.byteLength };
    };
    const levels = (await (await fetch(`${slide}/tiles`, { headers: {
      Authorization: `Bearer ${localStorage.getItem('slidelabel.token')}` } })).json()).levels;
    return {
      superpixels_binary: await timed(`${slide}/superpixels?format=binary`),
      labels_bin: await timed(`${slide}/labels.bin?view=mine`),
      labels_json: await timed(`${slide}/labels`),
      label_50: await timed(`${slide}/labels`, { method: 'PUT', body: JSON.stringify({
        superpixels: Array.from({ length: 50 }, (_, i) => 1 + i * 997), category_id: null, epoch: 0 }) }),
      index_tile_new: await timed(`${slide}/superpixel-tiles/${levels - 1}/7/9.png`),
      index_tile_coarse: await timed(`${slide}/superpixel-tiles/${Math.max(0, levels - 5)}/1/1.png`),
      review_first_page: await timed(`/api/v1/projects/${p}/review?slide_id=${s}&limit=100`),
      export_geojson_labels: await timed(`${slide}/export/geojson?source=labels&dissolve=false`),
      labels_summary: await timed(`/api/v1/projects/${p}/labels/summary`),
    };
  }, [projectId, slideId]);
  console.log(JSON.stringify({
    click_to_overlay_ms: summary(clickMs), brush_to_overlay_ms: summary(brushMs), brush_back_to_back_ms: summary(brushContinuousMs),
    view_to_legend_ms: legendMs, view_to_first_overlay_ms: firstOverlayMs,
    js_heap_used_mb: heap ? +(heap.used / 2 ** 20).toFixed(1) : null,
    js_heap_total_mb: heap ? +(heap.total / 2 ** 20).toFixed(1) : null,
    server_routes: server, labels_saved_by_category: labelled, page_errors: errors,
  }));
} finally {
  await browser.close();
}
