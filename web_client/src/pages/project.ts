// A project: its slides (add from a server folder or upload; prepare and watch the jobs),
// its categories (colour, key, excluded) and its choice of features, model and strategy.

import type { App, Page } from '../app';
import type { Category, Job, Project, Registry, Slide, SlideFolder } from '../api/types';
import { hrefOf } from '../router';
import { isFinished } from '../state/jobs';
import { h, replace } from '../ui/dom';
import { header, progressBar } from '../ui/layout';
import { attempt, notify, showError } from '../ui/notices';
import { registrySelect } from './projects';

function jobCell(job: Slide['superpixels_job']): HTMLElement | string {
  if (!job) return '—';
  if (job.state === 'running' || job.state === 'queued') return progressBar(job.progress, job.message || job.state);
  return h('span', { class: `state ${job.state}`, title: job.message }, job.state);
}

function slidesTable(app: App, project: Project, slides: Slide[], refresh: () => void): HTMLElement {
  return h('table', { class: 'slides' },
    h('thead', {}, h('tr', {}, ['Slide', 'Size (px)', 'µm/px', 'Superpixels', 'Superpixel job', 'Feature job', '']
      .map((t) => h('th', {}, t)))),
    h('tbody', {}, slides.map((slide) => h('tr', { 'data-slide': slide.id },
      h('td', {}, slide.superpixels
        ? h('a', { href: hrefOf({ page: 'label', project: project.id, slide: slide.id }) }, slide.name) : slide.name),
      h('td', {}, `${slide.width} × ${slide.height}`),
      h('td', {}, slide.mpp?.toFixed(3) ?? '?'),
      h('td', {}, slide.superpixels ?? '—'),
      h('td', {}, jobCell(slide.superpixels_job)),
      h('td', {}, jobCell(slide.features_job)),
      h('td', {}, project.role === 'owner' && h('button', { type: 'button', class: 'link', onclick: async () => {
        if (!confirm(`Remove ${slide.name} and its labels?`)) return;
        await attempt('Could not remove the slide', () => app.api.deleteSlide(project.id, slide.id));
        refresh();
      } }, 'Remove'))))));
}

function addSlides(app: App, project: Project, folders: SlideFolder[], refresh: () => void): HTMLElement {
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

function categoriesTable(app: App, project: Project, refresh: () => void): HTMLElement {
  const owner = project.role === 'owner';
  const update = (category: Category, change: Record<string, unknown>) =>
    attempt('Could not change the category', () => app.api.updateCategory(project.id, category.id, change)).then(refresh);
  const rows = [...project.categories].sort((a, b) => a.position - b.position).map((category) => h('tr', {},
    h('td', {}, h('input', { type: 'color', value: category.color.toLowerCase(), disabled: !owner,
      'aria-label': `colour of ${category.name}`,
      onchange: (e: Event) => update(category, { color: (e.target as HTMLInputElement).value }) })),
    h('td', {}, h('input', { value: category.name, disabled: !owner, 'aria-label': 'name',
      onchange: (e: Event) => update(category, { name: (e.target as HTMLInputElement).value }) })),
    h('td', {}, h('input', { value: category.hotkey ?? '', maxlength: 1, size: 2, disabled: !owner,
      'aria-label': `key of ${category.name}`,
      onchange: (e: Event) => update(category, { hotkey: (e.target as HTMLInputElement).value }) })),
    h('td', {}, h('input', { type: 'checkbox', checked: category.excluded, disabled: !owner,
      'aria-label': `exclude ${category.name} from training`,
      onchange: (e: Event) => update(category, { excluded: (e.target as HTMLInputElement).checked }) }))));
  const name = h('input', { 'aria-label': 'new category name', placeholder: 'new category' });
  const addForm = h('form', { class: 'inline' }, name, h('button', { type: 'submit' }, 'Add category'));
  addForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (await attempt('Could not add the category',
      () => app.api.addCategory(project.id, { name: name.value, excluded: false }))) refresh();
  });
  return h('div', {},
    h('table', { class: 'categories' }, h('thead', {}, h('tr', {}, ['Colour', 'Name', 'Key', 'Excluded']
      .map((t) => h('th', {}, t)))), h('tbody', {}, rows)),
    owner && addForm);
}

function choices(app: App, project: Project, registry: Registry, refresh: () => void): HTMLElement {
  const extractor = registrySelect('features', registry.features, project.extractor);
  const model = registrySelect('model', registry.models, project.model);
  const strategy = registrySelect('strategy', registry.strategies, project.strategy);
  const form = h('form', { class: 'row' }, h('label', {}, 'Features', extractor), h('label', {}, 'Model', model),
    h('label', {}, 'Strategy', strategy), h('button', { type: 'submit', disabled: project.role !== 'owner' }, 'Save'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (await attempt('Could not save', () => app.api.updateProject(project.id,
      { extractor: extractor.value, model: model.value, strategy: strategy.value }))) {
      notify('Saved');
      refresh();
    }
  });
  return form;
}

export function projectPage(projectId: number): Page {
  return (app, root) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let left = false;
    const main = h('main', { class: 'page' });
    const draw = async () => {
      clearTimeout(timer);
      const [project, slides, registry, folders, jobs] = await Promise.all([
        app.api.project(projectId), app.api.slides(projectId), app.api.registry(),
        app.api.slideFolders().catch(() => [] as SlideFolder[]), app.api.jobs(projectId)]);
      if (left) return;
      const running = jobs.filter((job: Job) => !isFinished(job));
      const refresh = () => void draw();
      replace(root, header(app, project, 'project'), main);
      replace(main,
        h('h1', {}, project.name), project.description && h('p', {}, project.description),
        h('section', {}, h('h2', {}, 'Slides'),
          slidesTable(app, project, slides, refresh),
          project.role === 'owner' && addSlides(app, project, folders, refresh),
          h('p', {}, h('button', { type: 'button', class: 'primary', id: 'prepare', disabled: slides.length === 0,
            onclick: async () => {
              const started = await attempt('Could not start preparing', () => app.api.prepare(projectId));
              if (started) notify(`${started.length} job(s) started: superpixels, then features`);
              refresh();
            } }, 'Prepare slides'), ' superpixels and features for every slide; ',
          running.length ? `${running.length} job(s) running…` : 'no job running.')),
        h('section', {}, h('h2', {}, 'Categories'), categoriesTable(app, project, refresh)),
        h('section', {}, h('h2', {}, 'Features, model and strategy'), choices(app, project, registry, refresh)),
        h('section', {}, h('h2', {}, 'Recent jobs'), h('ul', { class: 'jobs' }, jobs.slice(0, 8).map((job) =>
          h('li', {}, `#${job.id} ${job.kind}${job.slide_id ? ` (slide ${job.slide_id})` : ''}: `,
            isFinished(job) ? h('span', { class: `state ${job.state}` }, job.state, job.message ? ` — ${job.message}` : '')
              : progressBar(job.progress, job.message || job.state))))));
      // While jobs run, the page follows them.
      if (running.length && !left) timer = setTimeout(refresh, 1000);
    };
    draw().catch((error) => showError('Could not load the project', error));
    return () => {
      left = true;
      clearTimeout(timer);
    };
  };
}
