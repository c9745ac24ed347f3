// Small SVG charts for the dashboard: a line plot per epoch, bars per category, a confusion table.
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
