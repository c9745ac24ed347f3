// A project's dashboard: whether more labels still pay (the stopping signal, the project's own
// learning curve, how far the shown certainty can be trusted), the model's cross-validated
// accuracy per epoch, labels per category and per user, labels against the latest predictions,
// and the exports.

import type { App, Page } from '../app';
import type { Category, Epoch, Project, ReviewItem, Slide } from '../api/types';
import { confusionMatrix } from '../state/confusion';
import {
  accuracyText, calibrationOf, changedFractionOf, estimatedAccuracyOf, learningCurve, percentText, stoppingOf,
} from '../state/epochMetrics';
import { barChart, confusionTable, learningCurveChart, lineChart, reliabilityDiagram } from '../ui/charts';
import { h, replace } from '../ui/dom';
import { header } from '../ui/layout';
import { showError } from '../ui/notices';
import { modelSection } from './cohorts';

/** The review listing holds each label with the latest prediction: enough for a confusion matrix. */
async function allLabels(app: App, projectId: number, cap = 5000): Promise<ReviewItem[]> {
  const items: ReviewItem[] = [];
  for (let offset = 0; offset < cap; offset += 1000) {
    const page = await app.api.review(projectId, { offset, limit: 1000 });
    items.push(...page.items);
    if (items.length >= page.total) break;
  }
  return items;
}

function accuracyChart(epochs: Epoch[]): HTMLElement {
  if (epochs.length === 0) return h('p', {}, 'No epoch yet: label a few superpixels of each category and press Retrain.');
  const sorted = [...epochs].sort((a, b) => a.number - b.number);
  const metric = (key: string) => sorted.map((e) => (typeof e.metrics[key] === 'number' ? (e.metrics[key] as number) : null));
  return h('div', {},
    lineChart('Cross-validated accuracy per epoch', sorted.map((e) => e.number), [
      { name: 'balanced accuracy', colour: '#0072B2', values: metric('cv_balanced_accuracy') },
      { name: 'macro F1', colour: '#D55E00', values: metric('cv_macro_f1') },
    ]),
    h('table', {}, h('thead', {}, h('tr', {}, ['Epoch', 'Labels', 'Model', 'Balanced accuracy', 'Note']
      .map((t) => h('th', {}, t)))),
    h('tbody', {}, sorted.map((e) => h('tr', {}, h('td', {}, e.number), h('td', {}, e.labels),
      h('td', {}, String(e.metrics.model_chosen ?? e.metrics.model ?? '')),
      h('td', {}, typeof e.metrics.cv_balanced_accuracy === 'number' ? e.metrics.cv_balanced_accuracy.toFixed(3) : '—'),
      h('td', {}, String(e.metrics.cv_note ?? '')))))));
}

/** The latest epoch's stopping sentence, prominent when labels buy little, and the figures behind it. */
function stoppingPanel(latest: Epoch): HTMLElement | null {
  const stopping = stoppingOf(latest.metrics);
  const changed = changedFractionOf(latest.metrics);
  const accuracy = estimatedAccuracyOf(latest.metrics);
  if (!stopping && changed === null && !accuracy) return null;
  return h('div', { class: `stopping${stopping?.plateau ? ' plateau' : ''}`, role: 'status', id: 'stopping' },
    h('p', { class: 'sentence' }, stopping?.plateau && h('strong', {}, 'More labels are buying little. '),
      stopping?.sentence ?? `Epoch ${latest.number}.`),
    h('p', { class: 'figures' }, `Epoch ${latest.number}, ${latest.labels} labels`,
      changed !== null && h('span', { class: 'changed', 'data-changed': changed },
        ` · predictions changed since the previous epoch: ${percentText(changed)}`),
      accuracy && h('span', { class: 'accuracy' }, ` · estimated accuracy ${accuracyText(accuracy)}` +
        `${accuracy.n !== null ? ` (${accuracy.n} out-of-fold predictions)` : ''}`)));
}

/** The reliability diagram of the latest calibrated epoch, or a line saying why there is none. */
function calibrationFigure(latest: Epoch): HTMLElement {
  const calibration = calibrationOf(latest.metrics);
  if (!calibration || calibration.bins.length === 0) {
    return h('p', { class: 'muted' }, 'No calibration yet: epochs report it once every category has enough labels for out-of-fold predictions.');
  }
  const ece = (value: number | null) => (value === null ? '—' : value.toFixed(3));
  const how = calibration.method === 'temperature' && calibration.temperature !== null
    ? `temperature scaling, T = ${calibration.temperature.toFixed(2)}` : calibration.method;
  return reliabilityDiagram(`Reliability of the shown certainty (epoch ${latest.number})`, calibration.bins,
    `Expected calibration error ${ece(calibration.eceBefore)} before, ${ece(calibration.ece)} after calibration ` +
    `(${how}); a calibrated model's bars reach the diagonal.`);
}

function learningSection(epochs: Epoch[]): HTMLElement | null {
  if (epochs.length === 0) return null;
  const latest = epochs.reduce((a, b) => (b.number > a.number ? b : a));
  const curve = learningCurve(epochs);
  const last = curve[curve.length - 1];
  return h('section', { class: 'learning' }, h('h2', {}, 'Are more labels paying?'),
    stoppingPanel(latest),
    h('div', { class: 'charts' },
      curve.length ? learningCurveChart(`Learning curve: estimated accuracy${last ? ` (now ${accuracyText(last.accuracy)})` : ''}`, curve)
        : h('p', { class: 'muted' }, 'No estimated accuracy yet: epochs report it from out-of-fold predictions.'),
      calibrationFigure(latest)));
}

function exportLinks(app: App, project: Project, slides: Slide[]): HTMLElement {
  const link = (label: string, href: string, key: string) => h('a', { href, download: '', 'data-export': key }, label);
  return h('div', {}, slides.map((slide) => h('div', { class: 'exports' }, h('strong', {}, slide.name),
    link('GeoJSON labels (QuPath)', app.api.exportUrl(project.id, slide.id, 'geojson', 'labels'), 'geojson-labels'),
    link('GeoJSON predictions', app.api.exportUrl(project.id, slide.id, 'geojson', 'predictions'), 'geojson-predictions'),
    link('DSA annotation', app.api.exportUrl(project.id, slide.id, 'annotation', 'labels'), 'annotation'),
    link('Mask TIFF', app.api.exportUrl(project.id, slide.id, 'mask.tiff', 'predictions'), 'mask'),
    link('Predictions CSV', app.api.exportUrl(project.id, slide.id, 'predictions.csv'), 'csv'))),
  h('div', { class: 'exports' }, h('strong', {}, 'Whole project'),
    link('GeoJSON of every slide (zip)', app.api.http.url(`/projects/${project.id}/export/geojson.zip`), 'zip'),
    link('Predictions CSV', app.api.http.url(`/projects/${project.id}/export/predictions.csv`), 'project-csv')));
}

export function dashboardPage(projectId: number): Page {
  return (app, root) => {
    (async () => {
      const [project, slides, epochs, summary, labels] = await Promise.all([
        app.api.project(projectId), app.api.slides(projectId), app.api.epochs(projectId),
        app.api.labelSummary(projectId), allLabels(app, projectId)]);
      const model = await modelSection(app, project, epochs);
      const categories = [...project.categories].sort((a, b) => a.position - b.position);
      const byId = new Map<number, Category>(categories.map((c) => [c.id, c]));
      const name = (id: number) => byId.get(id)?.name ?? `#${id}`;
      const predicted = labels.filter((l) => l.predicted_category_id !== null);
      replace(root, header(app, project, 'dashboard'), h('main', { class: 'page' },
        h('h1', {}, `${project.name}: dashboard`),
        learningSection(epochs),
        h('section', { class: 'charts' },
          accuracyChart(epochs),
          barChart('Labels per category (all users)', summary.categories.map((c) => ({
            label: name(c.category_id), colour: byId.get(c.category_id)?.color ?? '#888', value: c.labels })))),
        h('section', {}, h('h2', {}, 'Labels per user'),
          h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'User'), h('th', {}, 'Labels'),
            categories.map((c) => h('th', {}, c.name)), h('th', {}, 'Last label'))),
          h('tbody', {}, summary.users.map((u) => h('tr', {}, h('td', {}, u.username), h('td', {}, u.labels),
            categories.map((c) => h('td', {}, u.by_category[c.id] ?? 0)),
            h('td', {}, u.last_labelled_at ? new Date(u.last_labelled_at).toLocaleString() : '—')))))),
        h('section', {}, h('h2', {}, 'Labels against the latest predictions'),
          predicted.length ? confusionTable(
            `rows: label, columns: prediction of the latest epoch (${predicted.length} labelled superpixels; ` +
            'these are training labels, so this is optimistic: the cross-validated accuracy above is the honest figure)',
            categories.map((c) => c.name), categories.map((c) => c.name),
            confusionMatrix(predicted, categories.map((c) => c.id)))
            : h('p', {}, 'No prediction yet.')),
        h('section', {}, h('h2', {}, 'Exports'), exportLinks(app, project, slides)),
        model));
    })().catch((error) => showError('Could not load the dashboard', error));
  };
}
