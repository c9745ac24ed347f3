// Segments and features of a project's slides made by other tools: QuPath, HoVer-Net or CellViT
// GeoJSON, label-mask TIFFs and Histomics Label pixelmaps as a slide's segments; TRIDENT / CLAM
// patch features, Parquet / CSV tables and Histomics Label feature.h5 as imported features.
// The forms upload a file per slide, each starting an import job; the status table says per slide
// what was imported, the job's progress, and its summary (what was dropped and why) once done.

import type { App } from '../../app';
import type { Job, Project, ProjectImports, RegistryEntry, Slide, SlideImports } from '../../api/types';
import { isFinished } from '../../state/jobs';
import { h } from '../../ui/dom';
import { attempt, notify } from '../../ui/notices';
import { jobState } from './jobs';

export const IMPORT_SEGMENTS = 'import-segments';
export const IMPORT_FEATURES = 'import-features';
/** What the server accepts after `imported-` in a feature name (services/projects.py). */
const FEATURE_NAME = /^[a-z0-9][a-z0-9_-]{0,54}$/;

/** `imported-<name>` from what a person typed (`uni-trident` or `imported-uni-trident`), or null when the server would refuse it. */
export function importedName(typed: string): string | null {
  const name = typed.trim().toLowerCase().replace(/^imported-/, '');
  return FEATURE_NAME.test(name) ? `imported-${name}` : null;
}

/** The imported feature names as entries for the project's feature choice (the project's own choice always among them). */
export function importedExtractors(imports: ProjectImports | null, current: string): RegistryEntry[] {
  const names = new Set(imports?.extractors ?? []);
  if (current.startsWith('imported-')) names.add(current);
  return [...names].sort().map((name) => ({ name, description: 'features imported from another tool', default: false }));
}

/** The newest job of `kind` for each slide. */
function newestBySlide(jobs: Job[], kind: string): Map<number, Job> {
  const newest = new Map<number, Job>();
  for (const job of jobs) {
    if (job.kind !== kind || job.slide_id == null) continue;
    const seen = newest.get(job.slide_id);
    if (!seen || seen.id < job.id) newest.set(job.slide_id, job);
  }
  return newest;
}

/** An import job: its progress while it runs, its summary once done, the server's one-line reason once failed. */
function importJob(job: Job | undefined): (HTMLElement | string)[] | string {
  if (!job) return '—';
  if (!isFinished(job) || job.state === 'cancelled') return [jobState(job)];
  if (job.state === 'failed') return [jobState(job), h('span', { class: 'import-error error' }, ` ${job.message}`)];
  return [jobState(job), h('pre', { class: 'import-summary', 'data-job': job.id }, job.message)];
}

const counts = (record: Record<string, number>) =>
  Object.entries(record).map(([what, n]) => `${n.toLocaleString('en')} ${what}`).join('; ') || 'none';

function segmentsCell(imported: SlideImports | undefined, slide: Slide): HTMLElement | string {
  const segments = imported?.segments;
  if (!segments) return slide.superpixels ? `${slide.superpixels.toLocaleString('en')} computed superpixels` : '—';
  return h('span', { class: 'imported-segments', 'data-segments': segments.segments },
    `${segments.segments.toLocaleString('en')} segments (${segments.format}) from ${segments.source}`);
}

/** Points the segment form at a slide and moves to its file choice. */
function chooseSlide(slideId: number): void {
  const select = document.querySelector<HTMLSelectElement>('#segments-slide');
  if (!select) return;
  select.value = String(slideId);
  document.querySelector<HTMLInputElement>('#segments-file')?.focus();
}

/** Per slide: its segments (imported or computed), what an import dropped, its classes and imported features, and its import jobs. */
export function importsStatus(app: App, project: Project, slides: Slide[], imports: ProjectImports | null,
  jobs: Job[]): HTMLElement {
  if (slides.length === 0) return h('p', {}, 'Add a slide first.');
  const bySlide = new Map((imports?.slides ?? []).map((s) => [s.slide_id, s]));
  const segmentJobs = newestBySlide(jobs, IMPORT_SEGMENTS);
  const featureJobs = newestBySlide(jobs, IMPORT_FEATURES);
  return h('table', { class: 'imports' },
    h('thead', {}, h('tr', {}, ['Slide', 'Segments', 'Dropped', 'Classes', 'Imported features', 'Segment import',
      'Feature import', 'QuPath cells'].map((t) => h('th', {}, t)))),
    h('tbody', {}, slides.map((slide) => {
      const imported = bySlide.get(slide.id);
      return h('tr', { 'data-slide': slide.id },
        h('td', {}, slide.name, project.role === 'owner' && [h('br'), h('button', { type: 'button', class: 'link',
          'data-focus': `import-into-${slide.id}`, 'aria-label': `import segments into ${slide.name}`,
          onclick: () => chooseSlide(slide.id) }, 'Import segments…')]),
        h('td', {}, segmentsCell(imported, slide)),
        h('td', { class: 'dropped' }, imported?.segments ? counts(imported.segments.dropped) : '—'),
        h('td', { class: 'classes' }, imported?.segments ? counts(imported.segments.classes) : '—'),
        h('td', { class: 'features' }, imported?.features.length
          ? imported.features.map((f) => `${f.name} (${f.dimensions} dims, ${f.segments.toLocaleString('en')} segments)`)
            .join(', ') : '—'),
        h('td', { class: 'job-cell segment-import' }, importJob(segmentJobs.get(slide.id))),
        h('td', { class: 'job-cell feature-import' }, importJob(featureJobs.get(slide.id))),
        h('td', { class: 'cells-export' }, imported?.segments ? [
          h('a', { href: app.api.cellsUrl(project.id, slide.id, 'labels'), download: '', 'data-export': 'cells-labels' },
            'labelled'), ' · ',
          h('a', { href: app.api.cellsUrl(project.id, slide.id, 'predictions'), download: '',
            'data-export': 'cells-predictions' }, 'predicted')] : '—'));
    })));
}

function slideSelect(slides: Slide[], id: string): HTMLSelectElement {
  return h('select', { id, name: 'slide' }, slides.map((s) => h('option', { value: s.id }, s.name)));
}

/** Upload a slide's segments: one file, the mask's downsample, and whether its classes become labels. */
function segmentsForm(app: App, project: Project, slides: Slide[], started: () => void): HTMLElement {
  const slide = slideSelect(slides, 'segments-slide');
  const file = h('input', { type: 'file', id: 'segments-file', accept: '.geojson,.json,.tif,.tiff' });
  const bboxes = h('input', { type: 'file', id: 'segments-bboxes', accept: '.csv',
    title: 'a Histomics Label pixelmap\'s bounding boxes (left, top, right, bottom in level-0 px, one line per segment)' });
  const downsample = h('input', { type: 'number', id: 'segments-downsample', min: 1, max: 1024, step: 'any',
    placeholder: 'the file\'s own', title: 'level-0 pixels per pixel of a label mask (empty: as the file says, else 1)' });
  const labels = h('input', { type: 'checkbox', id: 'segments-labels' });
  const form = h('form', { class: 'row import-segments', 'aria-label': 'import segments' },
    h('label', {}, 'Slide ', slide),
    h('label', {}, 'GeoJSON, label-mask or pixelmap TIFF ', file),
    h('label', {}, 'Pixelmap bounding boxes (CSV) ', bboxes),
    h('label', {}, 'Downsample ', downsample),
    h('label', {}, labels, ' import classifications as my labels'),
    h('button', { type: 'submit' }, 'Import segments'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) return notify('Choose the file of the segments first', 'error');
    const name = slides.find((s) => String(s.id) === slide.value)?.name;
    notify(`Uploading ${chosen.name} for ${name}…`);
    const job = await attempt(`Could not import segments into ${name}`, () => app.api.importSegments(project.id,
      Number(slide.value), chosen, { downsample: downsample.value ? Number(downsample.value) : undefined,
        labels: labels.checked || undefined, bboxes: bboxes.files?.[0] }));
    if (job) {
      notify(`Job #${job.id} imports ${chosen.name}, then computes the project's features on its segments`);
      file.value = '';
      bboxes.value = '';
      started();
    }
  });
  return form;
}

/** Upload imported features under one name: a file per slide. */
function featuresForm(app: App, project: Project, slides: Slide[], started: () => void): HTMLElement {
  const name = h('input', { id: 'features-name', value: 'uni-trident', required: true, size: 20,
    title: 'lower-case letters, digits, _ and -; the project offers it as imported-<name>' });
  const files = new Map(slides.map((s) => [s.id, h('input', { type: 'file', accept: '.h5,.hdf5,.parquet,.csv',
    'data-slide': s.id, 'aria-label': `feature file of ${s.name}` })]));
  const form = h('form', { class: 'import-features', 'aria-label': 'import features' },
    h('label', {}, 'Name ', name),
    h('table', { class: 'feature-files' }, h('tbody', {}, slides.map((s) =>
      h('tr', {}, h('td', {}, s.name), h('td', {}, files.get(s.id)!))))),
    h('button', { type: 'submit' }, 'Import features'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const feature = importedName(name.value);
    if (!feature) return notify('Could not import features: a name is 1-55 lower-case letters, digits, _ or -', 'error');
    const chosen = slides.flatMap((s) => (files.get(s.id)!.files?.[0] ? [[s, files.get(s.id)!] as const] : []));
    if (chosen.length === 0) return notify('Choose a feature file for at least one slide', 'error');
    let jobs = 0;
    for (const [s, input] of chosen) {
      const job = await attempt(`Could not import features into ${s.name}`,
        () => app.api.importFeatures(project.id, s.id, feature, input.files![0]));
      if (job) {
        jobs += 1;
        input.value = '';
      }
    }
    if (jobs) {
      notify(`${jobs} job(s) import ${feature}; once done, choose it as the project's features below`);
      started();
    }
  });
  return form;
}

/** The import forms, for owners (drawn once: redraws would drop the chosen files). */
export function importForms(app: App, project: Project, slides: Slide[], started: () => void): HTMLElement | null {
  if (project.role !== 'owner' || slides.length === 0) return null;
  return h('div', { class: 'import-forms' },
    h('h3', {}, 'Import segments'),
    h('p', { class: 'muted' }, 'Polygons in level-0 pixels (QuPath export, HoVer-Net / CellViT / StarDist as GeoJSON), ' +
      'a label mask (value = segment id) or a Histomics Label pixelmap with its bounding-box CSV replace the slide\'s ' +
      'superpixels; a slide with labels is refused.'),
    segmentsForm(app, project, slides, started),
    h('h3', {}, 'Import features'),
    h('p', { class: 'muted' }, 'TRIDENT / CLAM patch features (.h5: coords in level-0 px and features), a Parquet or ' +
      'CSV table keyed by segment id, or Histomics Label\'s feature.h5, for the slide\'s current segments.'),
    featuresForm(app, project, slides, started));
}
