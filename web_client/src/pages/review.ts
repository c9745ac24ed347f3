// Review: labelled superpixels in a grid, filtered by slide, labeller, category, agreement with
// the prediction and review state, sorted by certainty or date; select some (click, or A for
// all) and relabel them at once with a category's key; the agreement between labellers below.

import type { App, Page } from '../app';
import type { Agreement, Category, Member, Project, ReviewItem, ReviewQuery, Slide } from '../api/types';
import { categoryForKey } from '../state/hotkeys';
import { h, replace } from '../ui/dom';
import { header } from '../ui/layout';
import { attempt, notify, showError } from '../ui/notices';

const PAGE = 60;
const keyOf = (item: ReviewItem) => `${item.slide_id}:${item.superpixel}`;

type Option = [string, string];

function select(name: string, label: string, options: Option[], value: string, onChange: (v: string) => void) {
  return h('label', {}, label, h('select', { name, onchange: (e: Event) => onChange((e.target as HTMLSelectElement).value) },
    options.map(([v, text]) => h('option', { value: v, selected: v === value }, text))));
}

function agreementTable(agreement: Agreement): HTMLElement {
  const names = new Map(agreement.users.map((u) => [u.user_id, u.username]));
  if (agreement.pairs.length === 0) return h('p', {}, 'Agreement needs two labellers who labelled the same superpixels.');
  return h('table', {}, h('thead', {}, h('tr', {}, ['Labellers', 'In common', 'Agreed', "Cohen's κ"].map((t) => h('th', {}, t)))),
    h('tbody', {}, agreement.pairs.map((p) => h('tr', {},
      h('td', {}, `${names.get(p.first_user_id)} / ${names.get(p.second_user_id)}`), h('td', {}, p.common),
      h('td', {}, p.common ? `${p.agreed} (${Math.round((100 * p.agreed) / p.common)}%)` : '—'),
      h('td', {}, p.kappa === null ? '—' : p.kappa.toFixed(2))))));
}

export function reviewPage(projectId: number): Page {
  return (app: App, root: HTMLElement) => {
    const query: ReviewQuery = { sort: '-updated_at', offset: 0, limit: PAGE };
    const selected = new Set<string>();
    let items: ReviewItem[] = [];
    let project: Project;
    let slides: Slide[] = [];
    let members: Member[] = [];
    const grid = h('div', { class: 'review-grid', role: 'group', 'aria-label': 'labelled superpixels' });
    const status = h('p', { class: 'status' });
    const filters = h('div', { class: 'filters' });
    const bulk = h('div', { class: 'bulk' });
    const agreementBox = h('section', {});

    const categories = (): Category[] => [...project.categories].sort((a, b) => a.position - b.position);
    const name = (id: number | null | undefined) => project.categories.find((c) => c.id === id)?.name ?? '—';
    const colour = (id: number | null | undefined) => project.categories.find((c) => c.id === id)?.color ?? '#888';

    const setFilter = (key: keyof ReviewQuery, value: string) => {
      const q = query as Record<string, unknown>;
      if (value === '') delete q[key];
      else q[key] = key === 'sort' ? value : value === 'true' ? true : value === 'false' ? false : Number(value);
      query.offset = 0;
      void load();
    };

    const drawFilters = () => replace(filters,
      select('slide_id', 'Slide', [['', 'all'], ...slides.map((s): Option => [String(s.id), s.name])],
        String(query.slide_id ?? ''), (v) => setFilter('slide_id', v)),
      select('user_id', 'Labeller', [['', 'all'], ...members.map((m): Option => [String(m.user_id), m.username])],
        String(query.user_id ?? ''), (v) => setFilter('user_id', v)),
      select('category_id', 'Category', [['', 'all'], ...categories().map((c): Option => [String(c.id), c.name])],
        String(query.category_id ?? ''), (v) => setFilter('category_id', v)),
      select('mismatch', 'Prediction', [['', 'any'], ['true', 'disagrees'], ['false', 'agrees']],
        String(query.mismatch ?? ''), (v) => setFilter('mismatch', v)),
      select('reviewed', 'Reviewed', [['', 'any'], ['false', 'not yet'], ['true', 'reviewed']],
        String(query.reviewed ?? ''), (v) => setFilter('reviewed', v)),
      select('sort', 'Sort', [['-updated_at', 'newest first'], ['updated_at', 'oldest first'],
        ['certainty', 'least certain first'], ['-certainty', 'most certain first']], query.sort ?? '-updated_at',
      (v) => setFilter('sort', v)));

    const drawBulk = () => replace(bulk,
      h('button', { type: 'button', onclick: () => { items.forEach((i) => selected.add(keyOf(i))); drawGrid(); } },
        'Select all', h('kbd', {}, 'A')),
      h('button', { type: 'button', onclick: () => { selected.clear(); drawGrid(); } }, 'Select none'),
      ' Relabel selected as: ',
      categories().map((c) => h('button', { type: 'button', 'data-relabel': c.id, onclick: () => relabel(c.id) },
        h('span', { class: 'swatch', style: `background:${c.color}` }), ` ${c.name}`)),
      h('button', { type: 'button', onclick: () => relabel(null) }, 'Clear review'));

    const drawGrid = () => {
      replace(grid, items.map((item) => {
        const mismatch = item.predicted_category_id !== null && item.predicted_category_id !== item.category_id;
        return h('button', {
          type: 'button', class: 'review-item', 'aria-pressed': String(selected.has(keyOf(item))),
          onclick: () => {
            const key = keyOf(item);
            selected.has(key) ? selected.delete(key) : selected.add(key);
            drawGrid();
          },
        },
        h('img', { src: app.api.superpixelPictureUrl(projectId, item.slide_id, item.superpixel, 160), alt: '',
          loading: 'lazy' }),
        h('span', {}, h('span', { class: 'swatch', style: `background:${colour(item.category_id)}` }), ` ${name(item.category_id)}`,
          ` · ${item.username}`),
        h('span', { class: mismatch ? 'mismatch' : '' }, `predicted ${name(item.predicted_category_id)}`,
          item.certainty !== null ? ` (${Math.round(item.certainty * 100)}%)` : ''),
        item.reviewed_category_id !== null && h('span', {}, `✓ reviewed: ${name(item.reviewed_category_id)}`));
      }));
      const total = status.dataset.total ?? '0';
      replace(status, `${total} labels match; showing ${query.offset! + 1}–${query.offset! + items.length}; ${selected.size} selected. `,
        h('button', { type: 'button', disabled: query.offset === 0,
          onclick: () => { query.offset = Math.max(0, query.offset! - PAGE); void load(); } }, 'Previous'),
        h('button', { type: 'button', disabled: query.offset! + items.length >= Number(total),
          onclick: () => { query.offset = query.offset! + PAGE; void load(); } }, 'Next'));
    };

    const relabel = async (category: number | null) => {
      const chosen = items.filter((i) => selected.has(keyOf(i)));
      if (chosen.length === 0) return notify('Select superpixels first (click them, or A for all)', 'error');
      const result = await attempt('Could not relabel', () => app.api.relabel(projectId, {
        items: chosen.map((i) => ({ slide_id: i.slide_id, superpixel: i.superpixel })), category_id: category }));
      if (result) {
        notify(`${result.changed} reviewed${result.unchanged ? `, ${result.unchanged} already were` : ''}`);
        selected.clear();
        await load();
      }
    };

    const load = async () => {
      const page = await app.api.review(projectId, query);
      items = page.items;
      status.dataset.total = String(page.total);
      drawFilters();
      drawGrid();
    };

    const onKey = (event: KeyboardEvent) => {
      if (event.target instanceof HTMLSelectElement || event.target instanceof HTMLInputElement || !project) return;
      if (event.key.toLowerCase() === 'a' && !event.ctrlKey) {
        items.forEach((i) => selected.add(keyOf(i)));
        drawGrid();
      } else {
        const category = categoryForKey(event.key, project.categories);
        if (category === null || selected.size === 0) return;
        void relabel(category);
      }
      event.preventDefault();
    };
    document.addEventListener('keydown', onKey);

    (async () => {
      [project, slides, members] = await Promise.all([
        app.api.project(projectId), app.api.slides(projectId), app.api.members(projectId)]);
      replace(root, header(app, project, 'review'), h('main', { class: 'page' },
        h('h1', {}, `${project.name}: review`), filters, bulk, status, grid,
        h('h2', {}, 'Agreement between labellers'), agreementBox));
      drawBulk();
      await load();
      replace(agreementBox, agreementTable(await app.api.agreement(projectId)));
    })().catch((error) => showError('Could not load the review', error));
    return () => document.removeEventListener('keydown', onKey);
  };
}
