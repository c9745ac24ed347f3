// Small SVG charts for the dashboard: a line plot per epoch, bars per category, a confusion table,
// a reliability diagram and the learning curve with its interval.
import type { CurvePoint, ReliabilityBin } from '../state/epochMetrics';
import { h } from './dom';

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attributes: Record<string, string | number>,
  ...children: (SVGElement | string)[]): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child);
  return element;
}

export interface Series {
  name: string;
  colour: string;
  /** One value per x; null leaves a gap. */
  values: (number | null)[];
}

/** Lines over x = 1..n with y in [0, 1], a legend, and points readable without colour (title text). */
export function lineChart(title: string, xs: number[], series: Series[], width = 440, height = 220): HTMLElement {
  const pad = { left: 40, right: 12, top: 14, bottom: 30 };
  const x = (i: number) => pad.left + (xs.length <= 1 ? 0.5 : i / (xs.length - 1)) * (width - pad.left - pad.right);
  const y = (v: number) => pad.top + (1 - v) * (height - pad.top - pad.bottom);
  const plot = svg('svg', { width, height, role: 'img', 'aria-label': title });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    plot.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), stroke: '#e4e4ea' }),
      svg('text', { x: pad.left - 6, y: y(tick) + 4, 'text-anchor': 'end', 'font-size': 10 }, tick.toFixed(2)));
  }
  xs.forEach((value, i) => plot.append(svg('text', { x: x(i), y: height - 12, 'text-anchor': 'middle', 'font-size': 10 },
    String(value))));
  plot.append(svg('text', { x: width / 2, y: height - 1, 'text-anchor': 'middle', 'font-size': 10 }, 'epoch'));
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i)},${y(v)}`));
    const runs = points.join(' ').split(/\s*null\s*/).filter(Boolean);
    for (const run of runs) plot.append(svg('polyline', { points: run, fill: 'none', stroke: s.colour, 'stroke-width': 2,
      'stroke-dasharray': k % 2 ? '5 3' : 'none' }));
    s.values.forEach((v, i) => v !== null && plot.append(svg('circle', { cx: x(i), cy: y(v), r: 3.5, fill: s.colour },
      svg('title', {}, `${s.name}, epoch ${xs[i]}: ${v.toFixed(3)}`))));
  });
  return h('figure', { class: 'chart' }, h('figcaption', {}, title), plot,
    h('div', { class: 'chart-legend' }, series.map((s, k) => h('span', {},
      h('span', { class: 'swatch', style: `background:${s.colour}` }), ` ${s.name}${k % 2 ? ' (dashed)' : ''} `))));
}

export interface Bar {
  label: string;
  colour: string;
  value: number;
}

export function barChart(title: string, bars: Bar[], width = 440): HTMLElement {
  const row = 22;
  const labelWidth = 130;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const height = bars.length * row + 8;
  const plot = svg('svg', { width, height, role: 'img', 'aria-label': title });
  bars.forEach((bar, i) => {
    const length = (bar.value / max) * (width - labelWidth - 50);
    plot.append(
      svg('text', { x: labelWidth - 6, y: i * row + 16, 'text-anchor': 'end', 'font-size': 12 }, bar.label),
      svg('rect', { x: labelWidth, y: i * row + 4, width: Math.max(1, length), height: row - 8, fill: bar.colour }),
      svg('text', { x: labelWidth + length + 4, y: i * row + 16, 'font-size': 12 }, String(bar.value)));
  });
  return h('figure', { class: 'chart' }, h('figcaption', {}, title), plot);
}

/** A table of counts: rows `rowNames` by columns `columnNames`, the diagonal emphasised. */
export function confusionTable(caption: string, rowNames: string[], columnNames: string[], counts: number[][]): HTMLElement {
  return h('table', { class: 'confusion' }, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, h('th', {}, ''), columnNames.map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, rowNames.map((name, i) => h('tr', {}, h('th', { scope: 'row' }, name),
      counts[i].map((n, j) => h('td', { style: i === j ? 'font-weight:700;background:#e8f3ec' : '' }, n))))));
}

/** Axes of a square-ish plot: the frame, grid lines at `yTicks` and `xTicks`, axis names. */
function axes(plot: SVGSVGElement, frame: { x: (v: number) => number; y: (v: number) => number },
  xTicks: number[], yTicks: number[], names: [string, string], height: number): void {
  const [x0, x1] = [frame.x(xTicks[0]), frame.x(xTicks[xTicks.length - 1])];
  const [y0, y1] = [frame.y(yTicks[0]), frame.y(yTicks[yTicks.length - 1])];
  for (const tick of yTicks) {
    plot.append(svg('line', { x1: x0, x2: x1, y1: frame.y(tick), y2: frame.y(tick), stroke: '#e4e4ea' }),
      svg('text', { x: x0 - 6, y: frame.y(tick) + 4, 'text-anchor': 'end', 'font-size': 10 }, String(Number(tick.toFixed(2)))));
  }
  for (const tick of xTicks) {
    plot.append(svg('line', { x1: frame.x(tick), x2: frame.x(tick), y1: y0, y2: y1, stroke: '#f0f0f4' }),
      svg('text', { x: frame.x(tick), y: y0 + 14, 'text-anchor': 'middle', 'font-size': 10 }, String(Number(tick.toFixed(2)))));
  }
  plot.append(svg('text', { x: (x0 + x1) / 2, y: height - 2, 'text-anchor': 'middle', 'font-size': 11 }, names[0]),
    svg('text', { x: 11, y: (y0 + y1) / 2, 'text-anchor': 'middle', 'font-size': 11,
      transform: `rotate(-90 11 ${(y0 + y1) / 2})` }, names[1]));
}

/**
 * Accuracy against confidence of out-of-fold predictions in equal-width confidence bins (bars
 * over each bin, a point at the bin's mean confidence), with the diagonal a calibrated model
 * follows. `binWidth` is the bins' width (0.1 for ten bins).
 */
export function reliabilityDiagram(title: string, bins: ReliabilityBin[], caption: string, binWidth = 0.1,
  size = 260): HTMLElement {
  const pad = { left: 44, right: 10, top: 10, bottom: 34 };
  const x = (v: number) => pad.left + v * (size - pad.left - pad.right);
  const y = (v: number) => size - pad.bottom - v * (size - pad.top - pad.bottom);
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const plot = svg('svg', { width: size, height: size, role: 'img', 'aria-label': title, class: 'reliability' });
  axes(plot, { x, y }, ticks, ticks, ['confidence', 'accuracy'], size);
  plot.append(svg('line', { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: '#888', 'stroke-dasharray': '4 3' }));
  const total = bins.reduce((n, b) => n + b.count, 0) || 1;
  for (const bin of bins) {
    const left = Math.min(1 - binWidth, Math.floor(bin.confidence / binWidth + 1e-9) * binWidth);
    const tip = `confidence ${bin.confidence.toFixed(2)}: accuracy ${bin.accuracy.toFixed(2)} over ${bin.count} predictions`;
    // Opacity grows with the bin's share of predictions: a bin of three says little.
    plot.append(svg('rect', { x: x(left) + 1, y: y(bin.accuracy), width: x(binWidth) - x(0) - 2,
      height: Math.max(0, y(0) - y(bin.accuracy)), fill: '#0072B2', 'fill-opacity': 0.25 + 0.55 * Math.sqrt(bin.count / total),
      class: 'bin', 'data-confidence': bin.confidence, 'data-accuracy': bin.accuracy, 'data-count': bin.count },
    svg('title', {}, tip)),
    svg('circle', { cx: x(bin.confidence), cy: y(bin.accuracy), r: 3, fill: '#D55E00' }, svg('title', {}, tip)));
  }
  return h('figure', { class: 'chart reliability-diagram' }, h('figcaption', {}, title), plot,
    h('p', { class: 'chart-note' }, caption));
}

/** The largest round step (1, 2 or 5 times a power of ten, at least 1) with 3 or more steps up to `max`. */
export function niceStep(max: number): number {
  const power = 10 ** Math.floor(Math.log10(Math.max(max, 1)));
  return [5, 2, 1, 0.5, 0.2].map((m) => m * power).find((step) => step >= 1 && max / step >= 3) ?? 1;
}

/**
 * Estimated accuracy (a point per epoch) with its interval as a band, against the labels each
 * epoch was trained on. The y axis starts at the tenth below the lowest interval bound.
 */
export function learningCurveChart(title: string, points: CurvePoint[], width = 440, height = 240): HTMLElement {
  const pad = { left: 48, right: 14, top: 10, bottom: 34 };
  const maxLabels = Math.max(1, ...points.map((p) => p.labels));
  const floor = Math.max(0, Math.min(0.9, Math.floor(Math.min(...points.map((p) => p.accuracy.low)) * 10) / 10));
  const x = (v: number) => pad.left + (v / maxLabels) * (width - pad.left - pad.right);
  const y = (v: number) => height - pad.bottom - ((v - floor) / (1 - floor)) * (height - pad.top - pad.bottom);
  const xStep = niceStep(maxLabels);
  const xTicks = Array.from({ length: Math.floor(maxLabels / xStep) + 1 }, (_, i) => i * xStep);
  const yTicks = Array.from({ length: Math.round((1 - floor) * 10) + 1 }, (_, i) => floor + i / 10)
    .filter((_, i, all) => all.length <= 6 || i % 2 === 0 || i === all.length - 1);
  const plot = svg('svg', { width, height, role: 'img', 'aria-label': title, class: 'learning-curve' });
  axes(plot, { x, y }, xTicks, yTicks, ['labels', 'estimated accuracy'], height);
  if (points.length > 1) {
    const band = [...points.map((p) => `${x(p.labels)},${y(p.accuracy.high)}`),
      ...[...points].reverse().map((p) => `${x(p.labels)},${y(p.accuracy.low)}`)].join(' ');
    plot.append(svg('polygon', { points: band, fill: '#0072B2', 'fill-opacity': 0.15, stroke: 'none', class: 'interval' }),
      svg('polyline', { points: points.map((p) => `${x(p.labels)},${y(p.accuracy.value)}`).join(' '), fill: 'none',
        stroke: '#0072B2', 'stroke-width': 2 }));
  }
  for (const p of points) {
    plot.append(svg('line', { x1: x(p.labels), x2: x(p.labels), y1: y(p.accuracy.low), y2: y(p.accuracy.high),
      stroke: '#0072B2', 'stroke-width': 1.5 }),
    svg('circle', { cx: x(p.labels), cy: y(p.accuracy.value), r: 4, fill: '#0072B2', class: 'point',
      'data-epoch': p.epoch, 'data-labels': p.labels, 'data-value': p.accuracy.value, 'data-low': p.accuracy.low,
      'data-high': p.accuracy.high },
    svg('title', {}, `epoch ${p.epoch}, ${p.labels} labels: ${p.accuracy.value.toFixed(3)} ` +
      `(95% interval ${p.accuracy.low.toFixed(3)}-${p.accuracy.high.toFixed(3)})`)));
  }
  return h('figure', { class: 'chart learning-curve-chart' }, h('figcaption', {}, title), plot,
    h('p', { class: 'chart-note' }, 'Out-of-fold accuracy of each epoch; the band and bars are its 95% interval.'));
}
