// The projects you belong to, and a form to create one with what the server registers.
import type { Page } from '../app';
import type { Project, ProjectCreate, Registry, RegistryEntry } from '../api/types';
import { hrefOf } from '../router';
import { h, replace } from '../ui/dom';
import { header } from '../ui/layout';
import { showError } from '../ui/notices';

/** The entry the server marks as default; the first one when it marks none. */
export function defaultOf(entries: readonly RegistryEntry[]): string {
  return (entries.find((entry) => entry.default) ?? entries[0])?.name ?? '';
}

/** A <select> of registry entries, `chosen` (default: the registry's default) selected, descriptions as titles. */
export function registrySelect(name: string, entries: RegistryEntry[], chosen = defaultOf(entries)): HTMLSelectElement {
  return h('select', { name, 'aria-label': name }, entries.map((entry) => h('option', {
    value: entry.name, selected: entry.name === chosen, title: entry.description ?? '',
  }, `${entry.dimensions ? `${entry.name} (${entry.dimensions} dims)` : entry.name}${entry.default ? ' · default' : ''}`)));
}

function projectRow(project: Project): HTMLElement {
  const link = (label: string, page: 'project' | 'guided' | 'review' | 'dashboard') =>
    h('a', { href: hrefOf({ page, project: project.id }) }, label);
  return h('li', { class: 'project-row' },
    h('a', { href: hrefOf({ page: 'project', project: project.id }), class: 'title' }, project.name),
    h('span', { class: 'meta' }, `${project.role} · ${project.extractor} / ${project.model} / ${project.strategy}` +
      `${project.normalisation ? ` / ${project.normalisation}` : ''} · `,
      `${project.categories.length} categories`),
    h('span', { class: 'links' }, link('Guided', 'guided'), link('Review', 'review'), link('Dashboard', 'dashboard')));
}

function createForm(registry: Registry, onCreate: (project: Project) => void, app: Parameters<Page>[0]): HTMLElement {
  const name = h('input', { name: 'name', required: true, 'aria-label': 'project name' });
  const description = h('input', { name: 'description', 'aria-label': 'description' });
  const categories = h('input', { name: 'categories', value: 'tumour, stroma, other',
    'aria-label': 'categories, comma separated' });
  const extractor = registrySelect('features', registry.features);
  const model = registrySelect('model', registry.models);
  const strategy = registrySelect('strategy', registry.strategies);
  const normalisation = registry.normalisations?.length ? registrySelect('normalisation', registry.normalisations) : null;
  const form = h('form', { class: 'create card-box', 'aria-label': 'new project' },
    h('h2', {}, 'New project'),
    h('label', {}, 'Name', name),
    h('label', {}, 'Description', description),
    h('label', {}, 'Categories (comma separated; colours and keys 1-9 are given in order)', categories),
    h('div', { class: 'row' }, h('label', {}, 'Features', extractor), h('label', {}, 'Model', model),
      h('label', {}, 'Strategy', strategy), normalisation && h('label', {}, 'Normalisation', normalisation)),
    h('button', { type: 'submit', class: 'primary' }, 'Create project'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      // An older server lists no normalisations and takes none: the body then leaves it out.
      const project = await app.api.createProject({
        name: name.value, description: description.value, extractor: extractor.value, model: model.value,
        strategy: strategy.value, ...(normalisation ? { normalisation: normalisation.value } : {}), superpixels: {},
        categories: categories.value.split(',').map((c) => c.trim()).filter(Boolean)
          .map((c) => ({ name: c, excluded: false })),
      } as ProjectCreate);
      onCreate(project);
    } catch (error) {
      showError('Could not create the project', error);
    }
  });
  return form;
}

export const projectsPage: Page = (app, root) => {
  (async () => {
    const [projects, registry] = await Promise.all([app.api.projects(), app.api.registry()]);
    replace(root, header(app), h('main', { class: 'page' },
      h('h1', {}, 'Projects'),
      projects.length ? h('ul', { class: 'projects' }, projects.map(projectRow))
        : h('p', {}, 'No project yet: create one below.'),
      createForm(registry, (project) => (location.hash = hrefOf({ page: 'project', project: project.id })), app)));
  })().catch((error) => showError('Could not list the projects', error));
};
