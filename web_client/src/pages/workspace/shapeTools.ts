// Polygon, lasso and grow to similar in the labelling view. Polygon: click vertices, double-click
// (or Enter) closes, Backspace drops the last vertex; lasso: drag. A closed shape labels every
// superpixel it covers by at least half (the server counts them on the label map at the level
// shown) with the current category, or with Alt removes their labels, as one undoable batch.
// Shift-click a superpixel: the connected region of like superpixels is proposed (highlighted,
// with sliders for its reach and the certainty it needs), Enter labels it, Esc drops it.

import type { SlidelabelApi } from '../../api/slidelabel';
import type { Growth } from '../../api/types';
import { perf } from '../../perf';
import type { Point } from '../../state/brush';
import { GrowProposal, LassoPath, PolygonDraft, centroidsInside, vertexPairs } from '../../state/shapes';
import { h, replace } from '../../ui/dom';
import { showError } from '../../ui/notices';
import { ShapeLayer } from '../../viewer/shapeLayer';
import type { Labelling } from './labelling';
import type { SlideSession } from './slideSession';

/** Screen pixels a click may move and still add a vertex (more is a pan). */
const CLICK_SLOP_PX = 4;
/** Screen pixels between kept lasso points. */
const LASSO_SPACING_PX = 3;
/** Most neighbour steps a proposal is grown to; the reach slider picks up to this. */
const GROW_STEPS = 60;

export class ShapeTools {
  private readonly layer: ShapeLayer;
  private readonly draft = new PolygonDraft();
  private pointer: Point | null = null;
  private down: { x: number; y: number } | null = null;
  private proposal: GrowProposal | null = null;
  /** The seed of the proposal being fetched. */
  private growing: number | null = null;
  /** Certainty (or, by features, similarity) a grown superpixel needs, 0.5-0.99. */
  threshold = 0.8;
  reach = GROW_STEPS;
  private readonly panel: HTMLElement;

  constructor(
    private readonly api: SlidelabelApi,
    private readonly projectId: number,
    private readonly session: SlideSession,
    private readonly labelling: Labelling,
    private readonly categoryName: (id: number) => string,
  ) {
    const node = session.viewer.node;
    this.layer = new ShapeLayer(session.viewer);
    this.panel = h('div', { class: 'grow-panel', id: 'grow-panel', role: 'dialog', 'aria-label': 'grow to similar' });
    this.panel.style.display = 'none';
    node.parentElement!.appendChild(this.panel);
    node.addEventListener('mousedown', this.onDown, true);
    node.addEventListener('mouseup', this.onUp, true);
    node.addEventListener('dblclick', this.onDoubleClick, true);
    node.addEventListener('mousemove', this.onMove);
    labelling.onChange(() => {
      if (labelling.tool !== 'polygon' && this.draft.points.length) this.cancelDraft();
    });
  }

  /** Enter, Escape and Backspace while a polygon or proposal is open; true when handled. */
  onKey(event: KeyboardEvent): boolean {
    const open = this.draft.points.length > 0;
    if (!open && !this.proposal) return false;
    if (event.key === 'Escape') {
      this.cancelDraft();
      this.cancelGrow();
    } else if (event.key === 'Enter' && this.proposal && !open) this.acceptGrow();
    else if (event.key === 'Enter' && open) this.closePolygon(event.altKey);
    else if (event.key === 'Backspace' && open) {
      this.draft.removeLast();
      this.drawDraft(event.altKey);
    } else return false;
    return true;
  }

  private get viewer() {
    return this.session.viewer;
  }

  private readonly onDown = (event: MouseEvent): void => {
    if (event.button !== 0) return;
    if (event.shiftKey) {
      event.stopPropagation(); // not GeoJS's Shift-drag zoom box
      event.preventDefault();
      void this.grow(this.viewer.pointAt(event.clientX, event.clientY));
      return;
    }
    if (this.labelling.tool === 'polygon') this.down = { x: event.clientX, y: event.clientY };
    else if (this.labelling.tool === 'lasso') this.lasso(event);
  };

  private readonly onUp = (event: MouseEvent): void => {
    if (this.labelling.tool !== 'polygon' || !this.down || event.button !== 0) return;
    const moved = Math.hypot(event.clientX - this.down.x, event.clientY - this.down.y);
    this.down = null;
    if (moved > CLICK_SLOP_PX) return; // a pan
    const tolerance = CLICK_SLOP_PX * this.viewer.level0PerScreenPixel();
    this.draft.add(this.viewer.pointAt(event.clientX, event.clientY), tolerance);
    this.drawDraft(event.altKey);
  };

  private readonly onDoubleClick = (event: MouseEvent): void => {
    if (this.labelling.tool !== 'polygon') return;
    event.stopPropagation();
    event.preventDefault();
    this.closePolygon(event.altKey);
  };

  private readonly onMove = (event: MouseEvent): void => {
    if (this.labelling.tool !== 'polygon' || !this.draft.points.length) return;
    this.pointer = this.viewer.pointAt(event.clientX, event.clientY);
    this.drawDraft(event.altKey);
  };

  private drawDraft(subtract: boolean): void {
    this.layer.show(this.draft.points, { closed: false, subtract, pointer: this.pointer });
  }

  private cancelDraft(): void {
    this.draft.close();
    this.draft.points.length = 0;
    this.layer.clear();
  }

  private closePolygon(subtract: boolean): void {
    const points = this.draft.close();
    if (points) void this.apply(points, subtract, 'polygon');
    else this.layer.clear();
  }

  /** A lasso drag: caught before GeoJS sees it, so dragging draws instead of panning. */
  private lasso(start: MouseEvent): void {
    start.stopPropagation();
    start.preventDefault();
    const path = new LassoPath(LASSO_SPACING_PX * this.viewer.level0PerScreenPixel());
    const move = (e: MouseEvent) => {
      if (path.moveTo(this.viewer.pointAt(e.clientX, e.clientY))) {
        this.layer.show(path.points, { closed: false, subtract: e.altKey });
      }
    };
    const end = (e: MouseEvent) => {
      window.removeEventListener('mousemove', move, true);
      window.removeEventListener('mouseup', end, true);
      move(e);
      const points = path.close();
      if (points) void this.apply(points, e.altKey, 'lasso');
      else this.layer.clear();
    };
    window.addEventListener('mousemove', move, true);
    window.addEventListener('mouseup', end, true);
    move(start);
  }

  /** Labels (or with `subtract` unlabels) what the closed shape covers; one undoable batch. */
  private async apply(points: Point[], subtract: boolean, kind: 'polygon' | 'lasso'): Promise<void> {
    const category = subtract ? 0 : this.labelling.category;
    if (!subtract && !category) return this.layer.clear();
    const start = perf.mark(`${kind}-close`);
    this.layer.show(points, { closed: true, subtract });
    // The superpixels with their centroid inside, shown at once as a preview (as a brush stroke is)
    // while the server counts each one's covered pixels.
    const preview = centroidsInside(this.session.centroids, points);
    this.session.recolour(preview, category);
    this.viewer.afterFrame(() => perf.measure('shape-preview-to-overlay', start));
    try {
      const cover = await this.api.shapeCover(this.projectId, this.session.slide.id, {
        polygon_level0: vertexPairs(points), downsample: this.viewer.level0PerScreenPixel() });
      perf.measure('shape-cover-response', start);
      this.session.recolour(preview);
      const ids = subtract ? cover.superpixels.filter((id) => this.session.store.get(id) !== 0) : cover.superpixels;
      this.labelling.labelMany(ids, category);
      this.viewer.afterFrame(() => {
        perf.measure('shape-to-overlay', start);
        this.layer.clear();
      });
    } catch (error) {
      this.session.recolour(preview);
      this.layer.clear();
      showError(`The ${kind} could not be applied`, error);
    }
  }

  /** Proposes the region grown from the superpixel at `point`. */
  private async grow(point: Point): Promise<void> {
    const seed = this.viewer.superpixelAt(point) || this.session.centroids.nearest(point, 200);
    if (seed) await this.growFrom(seed);
  }

  private async growFrom(seed: number): Promise<void> {
    this.cancelDraft();
    if (this.proposal) this.session.recolour(this.proposal.superpixels);
    this.growing = seed;
    try {
      const found = await this.api.grow(this.projectId, this.session.slide.id, seed, this.threshold, GROW_STEPS);
      if (this.growing !== seed) return; // cancelled or replaced meanwhile
      this.proposal = new GrowProposal(seed, found.superpixels, found.steps);
      this.reach = this.proposal.maxSteps;
      this.showProposal(found);
    } catch (error) {
      this.cancelGrow();
      showError('Could not grow to similar superpixels', error);
    }
  }

  /** The panel of a new proposal; the reach slider then only repaints (the panel stays, so a drag goes on). */
  private showProposal(found: Growth): void {
    const proposal = this.proposal!;
    const count = h('span', { class: 'grow-count' });
    const steps = h('span', {});
    const reach = h('input', { type: 'range', min: 0, max: proposal.maxSteps, value: this.reach, name: 'grow-reach',
      'aria-label': 'how far it grows (neighbour steps)' });
    const paint = () => {
      this.session.recolour(proposal.superpixels);
      const shown = proposal.within(this.reach);
      this.session.highlight(shown);
      count.dataset.count = String(shown.length);
      count.textContent = `${shown.length} superpixels`;
      steps.textContent = `${this.reach} steps`;
    };
    reach.addEventListener('input', () => {
      this.reach = Number(reach.value);
      paint();
    });
    const threshold = h('input', { type: 'range', min: 50, max: 99, value: Math.round(this.threshold * 100),
      name: 'grow-threshold', 'aria-label': found.basis === 'predictions' ? 'least certainty' : 'least similarity' });
    threshold.addEventListener('change', () => {
      this.threshold = Number(threshold.value) / 100;
      void this.growFrom(proposal.seed);
    });
    const category = this.labelling.category;
    const why = found.basis === 'predictions'
      ? `predicted as the clicked superpixel by epoch ${found.epoch}, certainty ≥ ${this.threshold.toFixed(2)}`
      : `nearest ${Math.round((1 - this.threshold) * 100)}% of the slide in features (no epoch yet)`;
    this.panel.style.display = 'block';
    replace(this.panel,
      h('strong', {}, 'Grow to similar: '), count, h('div', { class: 'muted' }, why),
      h('label', {}, 'Reach', reach, steps),
      h('label', {}, found.basis === 'predictions' ? 'Certainty ≥' : 'Similarity', threshold,
        h('span', {}, this.threshold.toFixed(2))),
      h('div', { class: 'grow-actions' },
        h('button', { type: 'button', class: 'primary', id: 'grow-accept', disabled: !category,
          onclick: () => this.acceptGrow() }, category ? `Label them ${this.categoryName(category)} (Enter)` : 'Pick a category'),
        h('button', { type: 'button', id: 'grow-cancel', onclick: () => this.cancelGrow() }, 'Cancel (Esc)')));
    paint();
  }

  private acceptGrow(): void {
    if (!this.proposal || !this.labelling.category) return;
    const ids = this.proposal.within(this.reach);
    this.session.recolour(this.proposal.superpixels);
    this.labelling.labelMany(ids, this.labelling.category);
    this.closeGrow();
  }

  private cancelGrow(): void {
    if (this.proposal) this.session.recolour(this.proposal.superpixels);
    this.closeGrow();
  }

  private closeGrow(): void {
    this.proposal = null;
    this.growing = null;
    this.panel.style.display = 'none';
  }

  destroy(): void {
    this.layer.destroy();
    this.panel.remove();
  }
}
