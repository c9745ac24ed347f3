// A project's categories: colour, name (rename), key, excluded flag, labels so far, and merging one
// into another after a confirmation, since a merge moves every user's labels.

import type { App } from '../../app';
import type { Category, Project } from '../../api/types';
import { byPosition, mergeQuestion, mergeTargets, renameProblem } from '../../state/categories';
import { h } from '../../ui/dom';
import { attempt, notify } from '../../ui/notices';

function mergeControl(app: App, project: Project, category: Category, labels: Map<number, number>,
  refresh: () => void): HTMLElement {
  const targets = mergeTargets(category, project.categories);
  const into = h('select', { 'aria-label': `merge ${category.name} into`, 'data-focus': `merge-into-${category.id}`,
    class: 'merge-into' },
  h('option', { value: '' }, 'merge into…'),
  targets.map((target) => h('option', { value: target.id }, target.name)));
  const merge = h('button', { type: 'button', class: 'merge', disabled: true, 'data-focus': `merge-${category.id}`,
    'aria-label': `merge ${category.name} into the chosen category`, onclick: async () => {
      const target = targets.find((t) => String(t.id) === into.value);
      if (!target || !confirm(mergeQuestion(category, target, labels.get(category.id)))) return;
      const answer = await attempt('Could not merge the categories',
        () => app.api.mergeCategory(project.id, category.id, target.id));
      if (answer) notify(`${category.name} merged into ${target.name}: ${answer.moved_labels} label(s) moved`);
      refresh();
    } }, 'Merge');
  into.addEventListener('change', () => (merge.disabled = !into.value));
  return h('span', { class: 'merge-control' }, into, merge);
}

export function categoriesTable(app: App, project: Project, labels: Map<number, number>,
  refresh: () => void): HTMLElement {
  const owner = project.role === 'owner';
  const update = (category: Category, change: Record<string, unknown>) =>
    attempt('Could not change the category', () => app.api.updateCategory(project.id, category.id, change)).then(refresh);
  const rename = (category: Category, input: HTMLInputElement) => {
    const problem = renameProblem(category, input.value, project.categories);
    if (problem) {
      notify(`Could not rename ${category.name}: ${problem}`, 'error');
      input.value = category.name;
    } else if (input.value.trim() !== category.name) void update(category, { name: input.value.trim() });
  };
  const rows = byPosition(project.categories).map((category) => h('tr', { 'data-category': category.id },
    h('td', {}, h('input', { type: 'color', value: category.color.toLowerCase(), disabled: !owner,
      'aria-label': `colour of ${category.name}`, 'data-focus': `colour-${category.id}`,
      onchange: (e: Event) => update(category, { color: (e.target as HTMLInputElement).value }) })),
    // A change (Enter, or leaving the field) renames.
    h('td', {}, h('input', { value: category.name, disabled: !owner, class: 'category-name',
      'aria-label': `name of ${category.name} (Enter renames)`, 'data-focus': `name-${category.id}`,
      onchange: (e: Event) => rename(category, e.target as HTMLInputElement) })),
    h('td', {}, h('input', { value: category.hotkey ?? '', maxlength: 1, size: 2, disabled: !owner,
      'aria-label': `key of ${category.name}`, 'data-focus': `key-${category.id}`,
      onchange: (e: Event) => update(category, { hotkey: (e.target as HTMLInputElement).value }) })),
    h('td', {}, h('input', { type: 'checkbox', checked: category.excluded, disabled: !owner,
      'aria-label': `exclude ${category.name} from training`, 'data-focus': `excluded-${category.id}`,
      onchange: (e: Event) => update(category, { excluded: (e.target as HTMLInputElement).checked }) })),
    h('td', { class: 'count' }, labels.get(category.id) ?? 0),
    owner && h('td', {}, mergeControl(app, project, category, labels, refresh))));
  const name = h('input', { 'aria-label': 'new category name', placeholder: 'new category' });
  const addForm = h('form', { class: 'inline' }, name, h('button', { type: 'submit' }, 'Add category'));
  addForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (await attempt('Could not add the category',
      () => app.api.addCategory(project.id, { name: name.value, excluded: false }))) refresh();
  });
  const headings = ['Colour', 'Name', 'Key', 'Excluded', 'Labels', ...(owner ? ['Merge'] : [])];
  return h('div', {},
    h('table', { class: 'categories' }, h('thead', {}, h('tr', {}, headings.map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)),
    owner && addForm);
}
