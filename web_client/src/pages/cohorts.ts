// The dashboard's model section: an epoch's model downloads (native and ONNX), and "Apply epoch N
// to a server folder": the server predicts every slide file of a folder the user may read, one
// job per slide over every worker; the panel follows the cohort's job (share of slides ended) and
// lists each slide's state, superpixels per predicted category and its files to download.

import type { App } from '../app';
import type { Cohort, CohortSlide, Epoch, Project, SlideFolder } from '../api/types';
import { watchJob } from '../state/jobs';
import { h, replaceKeepingFocus } from '../ui/dom';
import { progressBar } from '../ui/layout';
import { attempt } from '../ui/notices';

const DOWNLOAD_NAMES: Record<string, string> = {
  mask: 'Mask TIFF', table: 'Predictions (Parquet)', geojson: 'GeoJSON (QuPath)', annotation: 'DSA annotation',
};

/** Folders a cohort may be run on: each readable folder and every folder under it that holds slide files. */
export function cohortFolders(folders: SlideFolder[]): string[] {
  const found = new Set<string>();
  for (const folder of folders) {
    found.add(folder.path);
    for (const slide of folder.slides) {
      for (let dir = slide.path.slice(0, slide.path.lastIndexOf('/')); dir.length > folder.path.length;
        dir = dir.slice(0, dir.lastIndexOf('/'))) found.add(dir);
    }
  }
  return [...found].sort();
}

/** "tumour 1,204 · stroma 310", largest first. */
export function countsText(counts: Record<string, number>): string {
  return Object.entries(counts).sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name} ${n.toLocaleString('en')}`).join(' · ') || '—';
}

function slideRow(app: App, slide: CohortSlide): HTMLElement {
  const { job } = slide;
  const state = job.state === 'running' ? `running ${Math.round(job.progress * 100)}%` : job.state;
  return h('tr', { 'data-cohort-slide': slide.name, 'data-state': job.state },
    h('td', {}, slide.slide),
    h('td', {}, state, job.state === 'failed' ? h('span', { class: 'error' }, ` ${job.message}`) : null),
    h('td', {}, countsText(slide.counts)),
    h('td', { class: 'exports' }, Object.entries(slide.downloads).map(([what, url]) =>
      h('a', { href: app.api.downloadUrl(url), download: '', 'data-download': what }, DOWNLOAD_NAMES[what] ?? what))));
}

function cohortView(app: App, cohort: Cohort): HTMLElement {
  const { job } = cohort;
  return h('div', { class: 'cohort', 'data-cohort': job.id, 'data-state': job.state },
    h('p', {}, `Epoch ${cohort.epoch} on ${cohort.folder}`,
      cohort.formats.length ? ` (also ${cohort.formats.join(', ')})` : '', `: ${job.state}`),
    progressBar(job.progress, job.message || job.state),
    cohort.slides.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Slide'), h('th', {}, 'State'),
      h('th', {}, 'Superpixels per predicted category'), h('th', {}, 'Files'))),
    h('tbody', {}, cohort.slides.map((slide) => slideRow(app, slide))))
      : h('p', { class: 'muted' }, 'Listing the folder\'s slides…'));
}

function modelLinks(app: App, project: Project, epoch: number): HTMLElement {
  return h('p', { class: 'exports' }, `Epoch ${epoch} model: `,
    h('a', { href: app.api.modelUrl(project.id, epoch, 'native'), download: '', 'data-model': 'native' },
      'Model file (slidelabel predict)'),
    h('a', { href: app.api.modelUrl(project.id, epoch, 'onnx'), download: '', 'data-model': 'onnx' },
      'ONNX model with JSON sidecar (zip)'));
}

/** Shows cohort `id` in `target`, following it until its job ends, the page is left or another
 * cohort is shown there (the returned function shows another). */
function follower(app: App, project: Project, target: HTMLElement): (id: number) => void {
  let shown = 0;
  return (id: number) => {
    shown = id;
    const watch = watchJob(async () => {
      const cohort = await app.api.cohort(project.id, id);
      if (shown === id) replaceKeepingFocus(target, cohortView(app, cohort));
      // Polling ends with the job; a job left behind reads as ended.
      return shown === id && target.isConnected ? cohort.job : { ...cohort.job, state: 'done' as const };
    }, () => undefined, 1500);
    watch.done.catch(() => undefined);
  };
}

function startForm(app: App, project: Project, epoch: number, folders: string[], onStarted: (id: number) => void) {
  if (folders.length === 0) {
    return h('p', { class: 'muted' }, 'Your account may read no server slide folder; the admin can grant one.');
  }
  const folder = h('select', { 'aria-label': 'Server folder', 'data-focus': 'cohort-folder' },
    folders.map((path) => h('option', { value: path }, path)));
  const geojson = h('input', { type: 'checkbox', 'data-format': 'geojson' });
  const annotation = h('input', { type: 'checkbox', 'data-format': 'annotation' });
  const start = h('button', {
    type: 'button', 'data-action': 'start-cohort',
    onclick: () => attempt('Could not start the cohort', async () => {
      const formats = [geojson.checked && 'geojson', annotation.checked && 'annotation']
        .filter((f): f is 'geojson' | 'annotation' => Boolean(f));
      const job = await app.api.startCohort(project.id, epoch, { folder: folder.value, formats });
      onStarted(job.id);
    }),
  }, `Apply epoch ${epoch}`);
  return h('div', { class: 'cohort-form' }, folder, h('label', {}, geojson, ' GeoJSON'),
    h('label', {}, annotation, ' DSA annotation'), start);
}

/** The dashboard's model section; null before the first epoch. */
export async function modelSection(app: App, project: Project, epochs: Epoch[]): Promise<HTMLElement | null> {
  if (epochs.length === 0) return null;
  const latest = epochs.reduce((a, b) => (b.number > a.number ? b : a)).number;
  const owner = project.role === 'owner' || Boolean(app.user?.is_admin);
  const [cohorts, folders] = await Promise.all([
    app.api.cohorts(project.id), owner ? app.api.slideFolders() : Promise.resolve([] as SlideFolder[])]);
  const shown = h('div', { 'data-cohorts': '' });
  const show = follower(app, project, shown);
  if (cohorts.length) show(cohorts[0].job.id);
  return h('section', { 'data-section': 'model' }, h('h2', {}, 'Model'),
    modelLinks(app, project, latest),
    h('h3', {}, `Apply epoch ${latest} to a server folder`),
    h('p', { class: 'muted' }, 'Every slide file in the folder (subfolders included) is segmented with this ' +
      'epoch\'s model at the project\'s superpixel options, one job per slide spread over every worker.'),
    owner ? startForm(app, project, latest, cohortFolders(folders), show)
      : h('p', { class: 'muted' }, 'The project\'s owners can start one.'),
    shown);
}
