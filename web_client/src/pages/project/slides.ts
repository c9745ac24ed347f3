// A project's slides with the state of their superpixel and feature jobs (Cancel / Retry beside
// them), and the ways to add slides: a file or folder on the server, or an upload.

import type { App } from '../../app';
import type { Project, Slide, SlideFolder } from '../../api/types';
import { hrefOf } from '../../router';
import { h } from '../../ui/dom';
import { attempt, notify } from '../../ui/notices';
import { jobButton, jobState } from './jobs';

type StepJob = NonNullable<Slide['superpixels_job']>;

/** A step's job: its state, and its button unless the other step of the row is the same job and has it. */
function jobCell(app: App, project: Project, job: StepJob | null | undefined, withButton: boolean,
  refresh: () => void): (HTMLElement | string | null)[] {
  if (!job) return ['—'];
  return [jobState(job), withButton ? jobButton(app, project, job, refresh, `slide-${job.kind}`) : null];
}

export function slidesTable(app: App, project: Project, slides: Slide[], refresh: () => void): HTMLElement {
  if (slides.length === 0) return h('p', {}, 'No slide yet: add one below.');
  return h('table', { class: 'slides' },
    h('thead', {}, h('tr', {}, ['Slide', 'Size (px)', 'µm/px', 'Superpixels', 'Superpixel job', 'Feature job', '']
      .map((t) => h('th', {}, t)))),
    h('tbody', {}, slides.map((slide) => {
      // A `prepare` job is both steps: one Cancel / Retry, in the feature column.
      const sameJob = slide.superpixels_job?.id === slide.features_job?.id;
      return h('tr', { 'data-slide': slide.id },
        h('td', {}, slide.superpixels
          ? h('a', { href: hrefOf({ page: 'label', project: project.id, slide: slide.id }) }, slide.name) : slide.name),
        h('td', {}, `${slide.width} × ${slide.height}`),
        h('td', {}, slide.mpp?.toFixed(3) ?? '?'),
        h('td', {}, slide.superpixels ?? '—'),
        h('td', { class: 'job-cell' }, jobCell(app, project, slide.superpixels_job, !sameJob, refresh)),
        h('td', { class: 'job-cell' }, jobCell(app, project, slide.features_job, true, refresh)),
        h('td', {}, project.role === 'owner' && h('button', { type: 'button', class: 'link',
          'aria-label': `remove ${slide.name}`, onclick: async () => {
            if (!confirm(`Remove ${slide.name} and its labels?`)) return;
            await attempt('Could not remove the slide', () => app.api.deleteSlide(project.id, slide.id));
            refresh();
          } }, 'Remove')));
    })));
}

export function addSlides(app: App, project: Project, folders: SlideFolder[], refresh: () => void): HTMLElement {
  const files = folders.flatMap((folder) => folder.slides.map((s) => s.path));
  const choice = h('select', { 'aria-label': 'slide file on the server', id: 'server-slide' },
    folders.map((folder) => h('option', { value: folder.path }, `${folder.path} (whole folder)`)),
    files.map((path) => h('option', { value: path }, path)));
  const add = h('button', { type: 'button', id: 'add-slide', onclick: async () => {
    const added = await attempt('Could not add the slide', () => app.api.addSlides(project.id, choice.value));
    if (added) {
      notify(`${added.added.length} slide(s) added` + (added.skipped.length
        ? `; skipped: ${added.skipped.map((s) => `${s.path} (${s.reason})`).join(', ')}` : ''));
      refresh();
    }
  } }, 'Add');
  const upload = h('input', { type: 'file', 'aria-label': 'upload a slide file', id: 'upload-slide' });
  upload.addEventListener('change', async () => {
    const file = upload.files?.[0];
    if (!file) return;
    notify(`Uploading ${file.name}…`);
    if (await attempt('The upload was refused', () => app.api.uploadSlide(project.id, file))) refresh();
    upload.value = '';
  });
  return h('div', { class: 'add-slides' },
    folders.length ? h('label', {}, 'From the server ', choice, ' ', add)
      : h('p', {}, 'The server has no slide folder (start it with --slide-folder), or your role may not list them.'),
    h('label', {}, 'Upload ', upload));
}
