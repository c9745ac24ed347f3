// Labelling on the slide: click a superpixel to label or unlabel it, paint with the brush, erase,
// undo and redo (polygon, lasso and grow to similar: ./shapeTools; smart: ./smartTool). Every change recolours the
// overlay at once and goes to the server as one request per category, in the order made; a
// refused request is taken back and its reason shown.

import type { SlidelabelApi } from '../../api/slidelabel';
import { BrushStroke, type Point } from '../../state/brush';
import type { LabelChange, LabelWrite } from '../../state/labelStore';
import { perf } from '../../perf';
import { showError } from '../../ui/notices';
import type { SlideSession } from './slideSession';

export type Tool = 'click' | 'brush' | 'erase' | 'polygon' | 'lasso' | 'smart';

export class Labelling {
  tool: Tool = 'click';
  category = 0;
  /** Brush radius in screen pixels. */
  radius = 24;
  /** The epoch whose predictions were on screen, sent with each label. */
  epoch = 0;
  private stroke: BrushStroke | null = null;
  /** The label writes in flight, chained: an undo sent right after a large batch must reach the server after it. */
  private writes: Promise<unknown> = Promise.resolve();
  private readonly listeners: (() => void)[] = [];
  private readonly cursor: HTMLElement;

  constructor(
    private readonly api: SlidelabelApi,
    private readonly projectId: number,
    private readonly session: SlideSession,
  ) {
    const { viewer } = session;
    viewer.onClick((point, event) => this.tool === 'click' && !event?.shiftKey && this.click(point));
    this.cursor = document.createElement('div');
    this.cursor.className = 'brush-cursor';
    viewer.node.parentElement!.appendChild(this.cursor);
    // Brush strokes are caught before GeoJS sees the mouse, so dragging paints instead of panning.
    viewer.node.addEventListener('mousedown', this.strokeStart, true);
    viewer.node.addEventListener('mousemove', this.hover);
    viewer.node.addEventListener('mouseleave', () => (this.cursor.style.display = 'none'));
  }

  /** Calls `listener` after every change of labels or of the tool (legend counts, buttons). */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  get canUndo(): boolean {
    return this.session.store.canUndo;
  }

  get canRedo(): boolean {
    return this.session.store.canRedo;
  }

  setTool(tool: Tool): void {
    this.tool = tool;
    this.changed();
  }

  setCategory(category: number): void {
    this.category = category;
    if (this.tool === 'erase') this.tool = 'click';
    this.changed();
  }

  /** Labels the superpixel at `point` with the current category, or unlabels it if it has it. */
  click(point: Point): void {
    const start = perf.mark('label-click');
    const id = this.superpixelAt(point);
    if (!id || !this.category) return;
    this.commit(this.session.store.apply([id], this.session.store.toggled(id, this.category)));
    perf.measure('label-to-table', start);
    this.session.viewer.afterFrame(() => perf.measure('label-to-overlay', start));
  }

  undo(): void {
    const undone = this.session.store.undo();
    if (undone) this.send(undone.writes, undone.change.superpixels, null);
  }

  redo(): void {
    const redone = this.session.store.redo();
    if (redone) this.send(redone.writes, redone.change.superpixels, null);
  }

  /** Labels `ids` of this slide as `category` (0 removes): a whole brush stroke or a guided card. */
  labelMany(ids: number[], category: number): LabelChange | null {
    const change = this.session.store.apply(ids, category);
    this.commit(change);
    return change;
  }

  private superpixelAt(point: Point): number {
    return this.session.viewer.superpixelAt(point) || this.session.centroids.nearest(point, 200);
  }

  private commit(change: LabelChange | null): void {
    if (!change) return;
    this.send([{ superpixels: change.superpixels, category: change.after }], change.superpixels, change);
  }

  /**
   * Recolours at once, then sends `writes` after those already sent (the server applies them in
   * the order made); on refusal takes `change` back (or reloads, for undo).
   */
  private send(writes: LabelWrite[], ids: number[], change: LabelChange | null): void {
    this.session.recolour(ids);
    this.changed();
    for (const write of writes) {
      this.writes = this.writes.then(() => this.api.setLabels(this.projectId, this.session.slide.id, {
        superpixels: write.superpixels, category_id: write.category || null, epoch: this.epoch,
      })).catch((error) => {
        showError('The label was not saved', error);
        if (change) this.session.store.discard(change);
        this.session.recolour(ids);
        this.changed();
      });
    }
  }

  private readonly strokeStart = (event: MouseEvent): void => {
    if (!this.painting || event.button !== 0 || event.shiftKey) return;
    const category = this.tool === 'erase' ? 0 : this.category;
    if (this.tool === 'brush' && !category) return;
    event.stopPropagation();
    event.preventDefault();
    const { viewer } = this.session;
    this.stroke = new BrushStroke(this.session.centroids, this.radius * viewer.level0PerScreenPixel());
    const paint = (e: MouseEvent) => {
      const point = viewer.pointAt(e.clientX, e.clientY);
      const added = this.stroke!.moveTo(point, viewer.superpixelAt(point));
      if (added.length) this.session.recolour(added, category);
      this.hover(e);
    };
    const end = () => {
      window.removeEventListener('mousemove', paint, true);
      window.removeEventListener('mouseup', end, true);
      const batch = this.stroke!.batch();
      this.stroke = null;
      const change = this.session.store.apply(batch, category);
      if (change) this.commit(change);
      else this.session.recolour(batch); // nothing changed: drop the preview
    };
    window.addEventListener('mousemove', paint, true);
    window.addEventListener('mouseup', end, true);
    paint(event);
  };

  /** Whether the tool paints with the brush cursor (brush, eraser). */
  private get painting(): boolean {
    return this.tool === 'brush' || this.tool === 'erase';
  }

  private readonly hover = (event: MouseEvent): void => {
    if (!this.painting) {
      this.cursor.style.display = 'none';
      return;
    }
    const rect = this.session.viewer.node.getBoundingClientRect();
    Object.assign(this.cursor.style, {
      display: 'block', width: `${this.radius * 2}px`, height: `${this.radius * 2}px`,
      left: `${event.clientX - rect.left - this.radius}px`, top: `${event.clientY - rect.top - this.radius}px`,
    });
  };

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  destroy(): void {
    this.cursor.remove();
  }
}
