// A project's dashboard: the model's cross-validated accuracy per epoch, labels per category and
// per user, labels against the latest predictions, and the exports.

import type { App, Page } from '../app';
import type { Category, Epoch, Project, ReviewItem, Slide } from '../api/types';
import { confusionMatrix } from '../state/confusion';
import { barChart, confusionTable, lineChart } from '../ui/charts';
import { h, replace } from '../ui/dom';
import { header } from '../ui/layout';
import { showError } from '../ui/notices';

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
      const categories = [...project.categories].sort((a, b) => a.position - b.position);
      const byId = new Map<number, Category>(categories.map((c) => [c.id, c]));
      const name = (id: number) => byId.get(id)?.name ?? `#${id}`;
      const predicted = labels.filter((l) => l.predicted_category_id !== null);
      replace(root, header(app, project, 'dashboard'), h('main', { class: 'page' },
        h('h1', {}, `${project.name}: dashboard`),
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
        h('section', {}, h('h2', {}, 'Exports'), exportLinks(app, project, slides))));
    })().catch((error) => showError('Could not load the dashboard', error));
  };
}
