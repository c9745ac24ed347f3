// The labelling and guided page: the slide viewer with its controls, and in guided mode the
// strip of cards. Keys: a category's key labels (guided) or picks it (labelling); V/B/E/P/F/S tools,
// [ and ] brush size, Ctrl+Z/Ctrl+Y undo/redo, O overlay, L outlines; the view: arrows
// (Shift+arrows in guided mode) pan, + and - zoom, 0 the whole slide; guided: arrows, Enter,
// Ctrl+Enter; polygon and grow to similar: Enter, Esc, Backspace.

import type { App } from '../../app';
import type { Category, Project, Slide } from '../../api/types';
import { hrefOf } from '../../router';
import type { Card } from '../../state/guidedQueue';
import { categoryForKey } from '../../state/hotkeys';
import { viewActionForKey, viewKeysHelp } from '../../state/viewKeys';
import { h, replace } from '../../ui/dom';
import { header } from '../../ui/layout';
import { showError } from '../../ui/notices';
import { minimap } from '../../viewer/minimap';
import { GuidedStrip } from './guided';
import { Labelling, type Tool } from './labelling';
import { retrainControl } from './retrain';
import { legend, overlayControls, toolBar } from './sidePanel';
import { ShapeTools } from './shapeTools';
import { SmartTool } from './smartTool';
import { SlideSession } from './slideSession';

const TOOL_KEYS: Record<string, Tool> = { v: 'click', b: 'brush', e: 'erase', p: 'polygon', f: 'lasso', s: 'smart' };

function typing(target: EventTarget | null): boolean {
  const element = target as HTMLElement | null;
  if (!element) return false;
  if (element instanceof HTMLInputElement) return !['range', 'checkbox', 'radio', 'button'].includes(element.type);
  return element instanceof HTMLTextAreaElement || element instanceof HTMLSelectElement || element.isContentEditable;
}

/** Whether `target` is a control that the arrow keys adjust (a slider, a radio button). */
function adjusting(target: EventTarget | null): boolean {
  return target instanceof HTMLInputElement && (target.type === 'range' || target.type === 'radio');
}

export function workspacePage(mode: 'label' | 'guided', projectId: number, slideId?: number) {
  return (app: App, root: HTMLElement): (() => void) => {
    let session: SlideSession | null = null;
    let labelling: Labelling | null = null;
    let shapes: ShapeTools | null = null;
    let smart: SmartTool | null = null;
    let strip: GuidedStrip | null = null;
    let project: Project;
    let slides: Slide[] = [];
    let opening: Promise<void> = Promise.resolve();
    let left = false;
    const viewerBox = h('div', { class: 'viewer', id: 'viewer', tabindex: 0, 'aria-label': 'slide viewer' });
    const panel = h('aside', { class: 'panel' });
    const main = h('main', { class: `workspace ${mode}` }, h('div', { class: 'stage' }, viewerBox), panel);
    const retrain = retrainControl(app.api, projectId, async () => {
      await session?.loadPredictions(app.api, projectId);
      drawPanel();
      await strip?.reload();
      strip?.queue.current && follow(strip.queue.current);
    });

    const categories = (): Category[] => [...project.categories].sort((a, b) => a.position - b.position);

    /** Opens `slide` in the viewer (replacing the one open). */
    const open = (slide: Slide): Promise<void> => {
      opening = opening.then(async () => {
        if (left || session?.slide.id === slide.id) return;
        smart?.destroy();
        shapes?.destroy();
        labelling?.destroy();
        session?.destroy();
        session = labelling = shapes = smart = null;
        const node = h('div', { class: 'map' });
        replace(viewerBox, node);
        session = await SlideSession.open(app.api, projectId, slide, project.categories, node);
        labelling = new Labelling(app.api, projectId, session);
        shapes = new ShapeTools(app.api, projectId, session, labelling,
          (id) => project.categories.find((c) => c.id === id)?.name ?? `#${id}`);
        smart = new SmartTool(app.api, projectId, session, labelling);
        labelling.setCategory(categories()[0]?.id ?? 0);
        drawPanel();
      }).catch((error) => {
        console.error(error);
        showError(`Could not open ${slide.name}`, error);
      });
      return opening;
    };

    const follow = (card: Card) => {
      const slide = slides.find((s) => s.id === card.slide_id);
      if (!slide) return;
      void open(slide).then(() => {
        session?.viewer.focus(card.bbox_level0);
        session?.viewer.mark(card.bbox_level0);
      });
    };

    const prefetch = (card: Card) => {
      if (session?.slide.id === card.slide_id) session.viewer.prefetch(card.bbox_level0);
    };

    const save = (card: Card, category: number, epoch: number) => {
      if (session && labelling && session.slide.id === card.slide_id) {
        labelling.epoch = epoch;
        labelling.labelMany([card.superpixel], category);
      } else {
        app.api.setLabels(projectId, card.slide_id, { superpixels: [card.superpixel], category_id: category, epoch })
          .catch((error) => showError('The label was not saved', error));
      }
    };

    const drawPanel = () => {
      if (!session || !labelling) return;
      const slidePicker = h('select', { 'aria-label': 'slide', id: 'slide-picker', onchange: (e: Event) => {
        const chosen = slides.find((s) => s.id === Number((e.target as HTMLSelectElement).value));
        if (chosen) location.hash = hrefOf({ page: 'label', project: projectId, slide: chosen.id });
      } }, slides.map((s) => h('option', { value: s.id, selected: s.id === session!.slide.id }, s.name)));
      replace(panel,
        h('div', { class: 'modes' },
          h('a', { href: hrefOf({ page: 'label', project: projectId, slide: session.slide.id }),
            'aria-current': mode === 'label' ? 'page' : null }, 'Label'),
          h('a', { href: hrefOf({ page: 'guided', project: projectId }), 'aria-current': mode === 'guided' ? 'page' : null },
            'Guided')),
        slidePicker,
        h('h2', {}, 'Categories'),
        legend(categories(), labelling, session),
        toolBar(labelling),
        overlayControls(session),
        retrain.element,
        h('h2', {}, 'Overview'),
        minimap(session.viewer, app.api.thumbnailUrl(projectId, session.slide.id, 256), session.slide.width,
          session.slide.height),
        h('p', { class: 'keys' }, mode === 'guided'
          ? `Keys: a category key labels the card and moves on; ← → move; Enter accepts the prediction; Ctrl+Enter accepts the page; ${viewKeysHelp(mode)}.`
          : `Keys: category keys pick; V click, B brush, E erase, P polygon (double-click or Enter closes), F lasso ` +
            `(Alt: remove labels); S smart: rest on tissue, wheel or right-click for another scale, click labels; ` +
            `Shift-click grows to similar (Enter accepts, Esc cancels); [ ] brush size; ` +
            `Ctrl+Z / Ctrl+Y; O overlay; L outlines; ${viewKeysHelp(mode)}.`));
    };

    const onKey = (event: KeyboardEvent) => {
      if (typing(event.target) || !labelling || !session) return;
      if (event.key.startsWith('Arrow') && adjusting(event.target)) return; // a slider or radio keeps its arrows
      if (shapes?.onKey(event)) {
        event.preventDefault();
        return;
      }
      const key = event.key;
      const ctrl = event.ctrlKey || event.metaKey;
      if (ctrl && key.toLowerCase() === 'z') event.shiftKey ? labelling.redo() : labelling.undo();
      else if (ctrl && key.toLowerCase() === 'y') labelling.redo();
      else if (ctrl && key !== 'Enter') return;
      else {
        const category = event.altKey ? null : categoryForKey(key, project.categories);
        const view = category === null ? viewActionForKey(event, mode) : null;
        if (view) session.viewer.apply(view);
        else if (strip && strip.onKey(event, category)) {
          // handled by the strip
        } else if (category !== null) labelling.setCategory(category);
        else if (TOOL_KEYS[key.toLowerCase()]) labelling.setTool(TOOL_KEYS[key.toLowerCase()]);
        else if (key === '[' || key === ']') {
          labelling.radius = Math.max(4, Math.min(120, labelling.radius * (key === '[' ? 0.8 : 1.25)));
          labelling.setTool(labelling.tool);
        } else if (key.toLowerCase() === 'o') (document.getElementById('overlay-visible') as HTMLInputElement)?.click();
        else if (key.toLowerCase() === 'l') (document.getElementById('outlines') as HTMLInputElement)?.click();
        else return;
      }
      event.preventDefault();
    };

    (async () => {
      [project, slides] = await Promise.all([app.api.project(projectId), app.api.slides(projectId)]);
      replace(root, header(app, project, mode === 'guided' ? 'guided' : 'label'), main);
      const ready = slides.filter((s) => s.superpixels);
      if (mode === 'guided') {
        strip = new GuidedStrip(app.api, projectId, categories(), { follow, prefetch, save });
        main.querySelector('.stage')!.appendChild(strip.element);
        await strip.reload();
        const first = strip.queue.current;
        const slide = slides.find((s) => s.id === first?.slide_id) ?? ready[0];
        if (slide) await open(slide);
        if (first) follow(first);
      } else {
        const slide = slides.find((s) => s.id === slideId) ?? ready[0];
        if (slide) await open(slide);
      }
      if (!session) replace(viewerBox, h('p', { class: 'empty' }, 'No slide with superpixels yet: add slides and run "Prepare" on the project page.'));
    })().catch((error) => showError('Could not load the workspace', error));

    document.addEventListener('keydown', onKey);
    return () => {
      left = true;
      document.removeEventListener('keydown', onKey);
      retrain.stop();
      smart?.destroy();
      shapes?.destroy();
      labelling?.destroy();
      session?.destroy();
    };
  };
}
