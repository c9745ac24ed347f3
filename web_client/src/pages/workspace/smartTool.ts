// The smart tool (S). With a Segment Anything model on the server: when S is chosen and whenever
// the view settles, the server computes the embedding of the region in view; as the cursor rests,
// the model's three masks at that point come back as outlines (drawn) and the superpixels each
// covers by at least half (highlighted). Without a model (the server says basis "classical"): the
// connected superpixels that resemble the one under the cursor (by the latest epoch's predictions,
// or by features before any epoch), at three scales. Either way the wheel or a right-click cycles
// the scales, and a click labels the one shown with the current category (Alt: removes labels), as
// one undoable batch.

import type { SlidelabelApi } from '../../api/slidelabel';
import type { Point } from '../../state/brush';
import { type Region, SuggestionScales, regionServes } from '../../state/shapes';
import { h, replace } from '../../ui/dom';
import { showError } from '../../ui/notices';
import { ShapeLayer } from '../../viewer/shapeLayer';
import type { Labelling } from './labelling';
import type { SlideSession } from './slideSession';

/** How long the cursor rests before a proposal is asked for (ms): two frames of a moving mouse
 * (the browser sends a mousemove per frame), so a sweep asks nothing and a rest asks at once. */
const REST_MS = 35;
/** How long the view stays still before the region in view is embedded (ms). */
const SETTLE_MS = 250;
/** Screen pixels a click may move and still label (more is a pan). */
const CLICK_SLOP_PX = 4;
/** Screen pixels the cursor must move before a new SAM suggestion is asked for. */
const MOVE_PX = 3;

interface Scale {
  superpixels: number[];
  outline: Point[];
  score: number | null;
}

export class SmartTool {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private settle: ReturnType<typeof setTimeout> | undefined;
  /** What the server proposes by: unknown until the first embedding answers. */
  private basis: 'unknown' | 'sam' | 'classical' = 'unknown';
  /** The region embedded (or being embedded) and its answer. */
  private region: Region | null = null;
  private embedding: Promise<void> | null = null;
  /** What is being proposed for: a classical seed superpixel, or a SAM point (screen px); and its scales. */
  private seed = 0;
  private at: { x: number; y: number } | null = null;
  private asked = 0;
  /** The SAM request in flight: aborted when another is asked for or the proposal is dropped. */
  private pending: AbortController | null = null;
  private scales: SuggestionScales<Scale> | null = null;
  /** The scale last chosen: the next proposal opens at it. */
  private preferred = 0;
  private shown: number[] = [];
  private down: { x: number; y: number } | null = null;
  private readonly hint: HTMLElement;
  private readonly outline: ShapeLayer;

  constructor(
    private readonly api: SlidelabelApi,
    private readonly projectId: number,
    private readonly session: SlideSession,
    private readonly labelling: Labelling,
  ) {
    const node = session.viewer.node;
    this.outline = new ShapeLayer(session.viewer, 'suggestion');
    this.hint = h('div', { class: 'smart-hint', id: 'smart-hint', 'aria-live': 'polite' });
    this.hint.style.display = 'none';
    node.parentElement!.appendChild(this.hint);
    node.addEventListener('mousemove', this.onMove);
    node.addEventListener('mouseleave', () => this.clear());
    node.addEventListener('wheel', this.onWheel, { capture: true, passive: false });
    node.addEventListener('contextmenu', this.onContextMenu, true);
    node.addEventListener('mousedown', this.onDown, true);
    node.addEventListener('mouseup', this.onUp, true);
    labelling.onChange(() => (this.active ? this.viewSettled() : this.clear()));
    session.viewer.onViewChange(() => {
      clearTimeout(this.settle);
      if (this.active) this.settle = setTimeout(() => this.viewSettled(), SETTLE_MS);
    });
  }

  private get active(): boolean {
    return this.labelling.tool === 'smart';
  }

  /** Asks for the embedding of the region in view unless the one embedded still serves it. */
  private viewSettled(): void {
    if (!this.active || this.basis === 'classical') return;
    const visible = this.session.viewer.visibleBox();
    if (regionServes(this.region, visible)) return;
    const region: Region = visible;
    this.region = region;
    const started = performance.now();
    const body: [number, number, number, number] = [region[0], region[1], region[2], region[3]];
    this.embedding = this.api.samEmbed(this.projectId, this.session.slide.id, body).then((answer) => {
      this.basis = answer.basis;
      if (answer.basis === 'sam' && this.region === region && answer.region_level0) {
        this.region = answer.region_level0; // clipped to the slide
        performance.measure('smart-embed', { start: started });
      }
    }).catch((error) => {
      if (this.region === region) this.region = null;
      showError('Could not prepare Segment Anything for this view', error);
    });
  }

  private readonly onMove = (event: MouseEvent): void => {
    if (!this.active || event.buttons) return;
    clearTimeout(this.timer);
    const screen = { x: event.clientX, y: event.clientY };
    const point = this.session.viewer.pointAt(event.clientX, event.clientY);
    const restedAt = performance.now(); // the timing includes the wait that tells a rest from a move
    this.timer = setTimeout(() => void this.propose(point, screen, restedAt), REST_MS);
  };

  /** Asks for the three scales at `point` (level-0 px), unless they are shown already. */
  private async propose(point: Point, screen: { x: number; y: number }, restedAt: number): Promise<void> {
    if (this.basis === 'unknown' && !this.embedding) this.viewSettled();
    if (this.embedding) await this.embedding;
    if (this.basis === 'classical') return this.proposeClassical(point, restedAt);
    const region = this.region;
    if (this.basis !== 'sam' || !region) return;
    if (this.at && Math.hypot(this.at.x - screen.x, this.at.y - screen.y) < MOVE_PX) return;
    const inside = point.x >= region[0] && point.x < region[2] && point.y >= region[1] && point.y < region[3];
    if (!inside) return this.clear();
    const asked = ++this.asked;
    this.at = screen;
    this.pending?.abort();
    const pending = new AbortController();
    this.pending = pending;
    const asking = performance.now();
    try {
      const found = await this.api.samSuggest(this.projectId, this.session.slide.id, {
        region_level0: [region[0], region[1], region[2], region[3]], x_level0: point.x, y_level0: point.y,
        downsample: this.session.viewer.level0PerScreenPixel() }, pending.signal);
      if (asked !== this.asked || !this.active) return; // the cursor moved on meanwhile
      this.pending = null;
      performance.measure('smart-request', { start: asking });
      this.propose3(found.scales.map((s) => ({ superpixels: s.superpixels,
        outline: s.outline_level0.map(([x, y]) => ({ x, y })), score: s.score ?? null })), restedAt);
    } catch (error) {
      if (pending.signal.aborted) return; // a newer rest asked, or the proposal was dropped
      this.clear();
      showError('Could not suggest an outline', error);
    }
  }

  private async proposeClassical(point: Point, restedAt: number): Promise<void> {
    const seed = this.session.viewer.superpixelAt(point);
    if (seed === this.seed) return;
    this.clear();
    if (!seed) return;
    this.seed = seed;
    try {
      const found = await this.api.growScales(this.projectId, this.session.slide.id, seed);
      if (this.seed !== seed) return;
      this.propose3(found.map((f) => ({ superpixels: f.superpixels, outline: [], score: null })), restedAt);
    } catch (error) {
      this.clear();
      showError('Could not propose a region', error);
    }
  }

  private propose3(scales: Scale[], restedAt: number): void {
    const answered = performance.now();
    this.scales = new SuggestionScales(scales, this.preferred);
    this.show();
    this.session.viewer.afterFrame(() => {
      performance.measure('smart-rest-to-outline', { start: restedAt });
      performance.measure('smart-answer-to-outline', { start: answered });
    });
  }

  private show(): void {
    this.session.recolour(this.shown);
    const scale = this.scales?.current;
    this.shown = scale?.superpixels ?? [];
    this.session.highlight(this.shown);
    if (scale?.outline.length) this.outline.show(scale.outline, { closed: true, subtract: false });
    else this.outline.clear();
    const visible = Boolean(scale && (this.shown.length || scale.outline.length));
    this.hint.style.display = visible ? 'block' : 'none';
    this.hint.dataset.basis = this.basis;
    this.hint.dataset.scale = String((this.scales?.scale ?? 0) + 1);
    this.hint.dataset.count = String(this.shown.length);
    const score = scale?.score != null ? ` (model's IoU ${scale.score.toFixed(2)})` : '';
    replace(this.hint, h('strong', {}, `Scale ${(this.scales?.scale ?? 0) + 1} of ${this.scales?.scales.length ?? 0}: `),
      `${this.shown.length} superpixels${score} · wheel or right-click: another scale · click: label · Alt+click: remove`);
  }

  private cycle(by: number): void {
    if (!this.scales) return;
    this.scales.cycle(by);
    this.preferred = this.scales.scale;
    this.show();
  }

  private readonly onWheel = (event: WheelEvent): void => {
    if (!this.active || !this.scales || event.ctrlKey) return; // Ctrl+wheel still zooms
    event.preventDefault();
    event.stopPropagation();
    this.cycle(event.deltaY > 0 ? 1 : -1);
  };

  private readonly onContextMenu = (event: MouseEvent): void => {
    if (!this.active || !this.scales) return;
    event.preventDefault();
    event.stopPropagation();
    this.cycle(1);
  };

  private readonly onDown = (event: MouseEvent): void => {
    if (this.active && event.button === 0 && !event.shiftKey) this.down = { x: event.clientX, y: event.clientY };
  };

  private readonly onUp = (event: MouseEvent): void => {
    if (!this.active || !this.down || event.button !== 0) return;
    const moved = Math.hypot(event.clientX - this.down.x, event.clientY - this.down.y);
    this.down = null;
    if (moved > CLICK_SLOP_PX || !this.shown.length) return;
    const category = event.altKey ? 0 : this.labelling.category;
    if (!event.altKey && !category) return;
    const ids = this.shown;
    this.session.recolour(ids);
    this.shown = [];
    this.labelling.labelMany(ids, category);
    this.forget();
  };

  /** Drops the proposal shown (its highlight already undone by the caller). */
  private forget(): void {
    this.scales = null;
    this.seed = 0;
    this.at = null;
    this.asked += 1;
    this.pending?.abort();
    this.pending = null;
    this.outline.clear();
    this.hint.style.display = 'none';
  }

  private clear(): void {
    clearTimeout(this.timer);
    this.session.recolour(this.shown);
    this.shown = [];
    this.forget();
  }

  destroy(): void {
    clearTimeout(this.timer);
    clearTimeout(this.settle);
    this.outline.destroy();
    this.hint.remove();
  }
}
