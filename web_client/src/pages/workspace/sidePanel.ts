// The workspace's controls: categories with their keys and counts, tools, and what the overlay shows.
import type { Category } from '../../api/types';
import type { OverlaySource } from '../../state/colours';
import { keyOf } from '../../state/hotkeys';
import { h, replace } from '../../ui/dom';
import type { Labelling, Tool } from './labelling';
import type { SlideSession } from './slideSession';

const TOOLS: [Tool, string, string][] = [['click', 'Click', 'V'], ['brush', 'Brush', 'B'], ['erase', 'Erase', 'E'],
  ['polygon', 'Polygon', 'P'], ['lasso', 'Lasso', 'F'], ['smart', 'Smart', 'S']];
const SOURCES: [OverlaySource, string][] = [['labels', 'My labels'], ['predictions', 'Predictions'], ['certainty', 'Certainty']];

/** The category legend: a button per category (key, colour, name, count); the active one pressed. */
export function legend(categories: Category[], labelling: Labelling, session: SlideSession): HTMLElement {
  const list = h('div', { class: 'legend', role: 'group', 'aria-label': 'categories' });
  const draw = () => {
    const counts = session.store.counts();
    replace(list, categories.map((category) => h('button', {
      type: 'button', class: 'category', 'data-category': category.id,
      'aria-pressed': String(labelling.category === category.id && labelling.tool !== 'erase'),
      onclick: () => labelling.setCategory(category.id),
    },
    h('kbd', {}, keyOf(category, categories) ?? ''),
    h('span', { class: 'swatch', style: `background:${category.color}` }),
    h('span', { class: 'name' }, category.name, category.excluded ? ' (excluded)' : ''),
    h('span', { class: 'count' }, counts.get(category.id) ?? 0))));
  };
  labelling.onChange(draw);
  draw();
  return list;
}

export function toolBar(labelling: Labelling): HTMLElement {
  const bar = h('div', { class: 'tools' });
  const radius = h('input', { type: 'range', min: 4, max: 120, value: labelling.radius, 'aria-label': 'brush radius' });
  radius.addEventListener('input', () => (labelling.radius = Number(radius.value)));
  const draw = () => replace(bar,
    h('div', { role: 'group', 'aria-label': 'tool', class: 'segmented' }, TOOLS.map(([tool, label, key]) =>
      h('button', { type: 'button', 'aria-pressed': String(labelling.tool === tool), 'data-tool': tool,
        title: `${label} (${key})`, onclick: () => labelling.setTool(tool) }, label, h('kbd', {}, key)))),
    h('label', { class: 'radius' }, 'Brush ', radius),
    h('div', { class: 'segmented' },
      h('button', { type: 'button', title: 'Undo (Ctrl+Z)', id: 'undo', disabled: !labelling.canUndo,
        onclick: () => labelling.undo() }, 'Undo'),
      h('button', { type: 'button', title: 'Redo (Ctrl+Y)', id: 'redo', disabled: !labelling.canRedo,
        onclick: () => labelling.redo() }, 'Redo')));
  radius.value = String(labelling.radius);
  labelling.onChange(() => {
    radius.value = String(labelling.radius);
    const pressed = bar.querySelectorAll<HTMLButtonElement>('[data-tool]');
    pressed.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.tool === labelling.tool)));
    bar.querySelector<HTMLButtonElement>('#undo')!.disabled = !labelling.canUndo;
    bar.querySelector<HTMLButtonElement>('#redo')!.disabled = !labelling.canRedo;
  });
  draw();
  return bar;
}

/** What the overlay shows, outlines, opacity, on/off. */
export function overlayControls(session: SlideSession): HTMLElement {
  const opacity = h('input', { type: 'range', min: 0, max: 100, value: 60, 'aria-label': 'overlay opacity' });
  opacity.addEventListener('input', () => session.viewer.setOpacity(Number(opacity.value) / 100));
  session.viewer.setOpacity(0.6);
  const radios = SOURCES.map(([source, label]) => h('label', {},
    h('input', { type: 'radio', name: 'overlay-source', value: source, checked: session.source === source,
      disabled: source !== 'labels' && !session.hasPredictions,
      onchange: () => session.show(source) }), ' ', label));
  const outlines = h('input', { type: 'checkbox', id: 'outlines', checked: true,
    onchange: (e: Event) => session.viewer.setBoundaries((e.target as HTMLInputElement).checked) });
  session.viewer.setBoundaries(true);
  const visible = h('input', { type: 'checkbox', id: 'overlay-visible', checked: true,
    onchange: (e: Event) => session.viewer.setOverlayVisible((e.target as HTMLInputElement).checked) });
  return h('fieldset', { class: 'overlay' }, h('legend', {}, 'Overlay'),
    h('div', { class: 'sources' }, radios),
    h('label', {}, visible, ' Show (O)'), ' ', h('label', {}, outlines, ' Outlines (L)'),
    h('label', { class: 'opacity' }, 'Opacity ', opacity));
}
