// A project: its slides (add from a server folder or upload; prepare them), its jobs (follow,
// cancel, retry, read the log), its categories (colour, name, key, excluded; merge), its people
// and its choice of features, model, strategy and normalisation. The sections live in ./project/.

import type { App, Page } from '../app';
import type { Job, Project, ProjectImports, Registry, Slide, SlideFolder } from '../api/types';
import { isFinished } from '../state/jobs';
import { h, replace, replaceKeepingFocus } from '../ui/dom';
import { header } from '../ui/layout';
import { attempt, notify, showError } from '../ui/notices';
import { categoriesTable } from './project/categories';
import { gallerySection } from './project/gallery';
import { IMPORT_FEATURES, importedExtractors, importForms, importsStatus } from './project/imports';
import { jobsTable, newJobsView } from './project/jobs';
import { membersSection } from './project/members';
import { addSlides, slidesTable } from './project/slides';
import { registrySelect } from './projects';

function choices(app: App, project: Project, registry: Registry, imports: ProjectImports | null,
  refresh: () => void): HTMLElement {
  const extractor = registrySelect('features', [...registry.features, ...importedExtractors(imports, project.extractor)],
    project.extractor);
  const model = registrySelect('model', registry.models, project.model);
  const strategy = registrySelect('strategy', registry.strategies, project.strategy);
  // A server without the setting lists no normalisations: the choice is then left out.
  const normalisation = registry.normalisations?.length
    ? registrySelect('normalisation', registry.normalisations, project.normalisation) : null;
  const owner = project.role === 'owner';
  for (const select of [extractor, model, strategy, normalisation]) if (select) select.disabled = !owner;
  const form = h('form', { class: 'row choices' }, h('label', {}, 'Features', extractor), h('label', {}, 'Model', model),
    h('label', {}, 'Strategy', strategy), normalisation && h('label', {}, 'Normalisation', normalisation),
    h('button', { type: 'submit', disabled: !owner, title: owner ? null : 'only an owner changes these' }, 'Save'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (await attempt('Could not save', () => app.api.updateProject(project.id, {
      extractor: extractor.value, model: model.value, strategy: strategy.value,
      ...(normalisation ? { normalisation: normalisation.value } : {}) }))) {
      notify('Saved');
      refresh();
    }
  });
  return form;
}

function prepareButton(app: App, project: Project, slides: Slide[], running: number, follow: () => void): HTMLElement {
  return h('p', {}, h('button', { type: 'button', class: 'primary', id: 'prepare', disabled: slides.length === 0 || project.role === 'viewer',
    'data-focus': 'prepare', title: project.role === 'viewer' ? 'a viewer cannot start jobs' : null, onclick: async () => {
      const started = await attempt('Could not start preparing', () => app.api.prepare(project.id));
      if (started) notify(`${started.length} job(s) started: superpixels, then features`);
      follow();
    } }, 'Prepare slides'), ' superpixels and features for every slide; ',
  running ? `${running} job(s) running…` : 'no job running.');
}

export function projectPage(projectId: number): Page {
  return (app, root) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let left = false;
    const main = h('main', { class: 'page' });
    // Redrawn while jobs run: only these two boxes, so that forms elsewhere keep what is typed.
    const slidesBox = h('div', { class: 'slides-box' });
    const jobsBox = h('div', { class: 'jobs-box' });
    const importsBox = h('div', { class: 'imports-box' });
    // The import forms are drawn again only when the slides change: a redraw would drop the
    // files chosen in them.
    const formsBox = h('div', { class: 'import-forms-box' });
    let formsFor = ''; // the slides the import forms were drawn for
    // The finished feature imports seen last: a new one adds a feature choice, so the page is drawn again.
    let featureImports: string | undefined;
    // What the slides hold from other tools, read again only when an import job or the slides change.
    let imports: ProjectImports | null = null;
    let importsFor: string | undefined;
    const jobsView = newJobsView();
    let project: Project | undefined;

    const follow = async () => {
      clearTimeout(timer);
      if (!project) return;
      const [slides, jobs] = await Promise.all([app.api.slides(projectId), app.api.jobs(projectId)]);
      const importsNow = [...slides.map((slide) => slide.id), ...jobs.filter((job: Job) => job.kind.startsWith('import-'))
        .map((job) => `${job.id}:${job.state}`)].join();
      if (importsNow !== importsFor) {
        imports = await app.api.imports(projectId).catch(() => null);
        importsFor = importsNow;
      }
      if (left) return;
      const done = jobs.filter((job: Job) => job.kind === IMPORT_FEATURES && job.state === 'done').map((job) => job.id).join();
      const imported = featureImports !== undefined && done !== featureImports;
      featureImports = done;
      if (imported) return void draw().catch((error) => showError('Could not load the project', error));
      const running = jobs.filter((job: Job) => !isFinished(job)).length;
      const again = () => void follow().catch((error) => showError('Could not read the jobs', error));
      replaceKeepingFocus(slidesBox, slidesTable(app, project, slides, again),
        prepareButton(app, project, slides, running, again));
      replaceKeepingFocus(jobsBox, jobsTable(app, project, jobs, slides, jobsView, again));
      replaceKeepingFocus(importsBox, importsStatus(app, project, slides, imports, jobs));
      const shown = slides.map((slide) => `${slide.id}:${slide.name}`).join();
      if (formsFor !== shown) {
        formsFor = shown;
        replace(formsBox, importForms(app, project, slides, again));
      }
      if (running && !left) timer = setTimeout(again, 1000);
    };

    const draw = async () => {
      const [loaded, registry, folders, summary, extractors] = await Promise.all([
        app.api.project(projectId), app.api.registry(), app.api.slideFolders().catch(() => [] as SlideFolder[]),
        app.api.labelSummary(projectId), app.api.imports(projectId).catch(() => null)]);
      if (left) return;
      project = loaded;
      const labels = new Map(summary.categories.map((c) => [c.category_id, c.labels]));
      const refresh = () => void draw().catch((error) => showError('Could not load the project', error));
      const reloadSlides = () => void follow().catch((error) => showError('Could not read the slides', error));
      // A new header only: moving `main` would take the focus from whatever has it.
      const top = header(app, project, 'project');
      if (main.parentNode === root && root.firstElementChild !== main) root.replaceChild(top, root.firstElementChild!);
      else replace(root, top, main);
      replaceKeepingFocus(main,
        h('h1', {}, project.name), project.description && h('p', {}, project.description),
        h('section', { 'aria-labelledby': 'slides-heading' }, h('h2', { id: 'slides-heading' }, 'Slides'), slidesBox,
          project.role === 'owner' && addSlides(app, project, folders, reloadSlides)),
        h('section', { 'aria-labelledby': 'jobs-heading' }, h('h2', { id: 'jobs-heading' }, 'Jobs'), jobsBox),
        h('section', { 'aria-labelledby': 'imports-heading' },
          h('h2', { id: 'imports-heading' }, 'Segments and features from other tools'), importsBox, formsBox),
        h('section', { 'aria-labelledby': 'categories-heading' }, h('h2', { id: 'categories-heading' }, 'Categories'),
          categoriesTable(app, project, labels, refresh),
          project.role === 'owner' && h('p', { class: 'muted' }, 'Type a new name and press Enter to rename. ' +
            'Merging moves every label and review of a category into another one, then deletes it.')),
        membersSection(app, project),
        project.role === 'owner' && gallerySection(app, project),
        h('section', {}, h('h2', {}, 'Features, model, strategy and normalisation'), choices(app, project, registry, extractors, refresh)));
      await follow();
    };
    draw().catch((error) => showError('Could not load the project', error));
    return () => {
      left = true;
      clearTimeout(timer);
    };
  };
}
