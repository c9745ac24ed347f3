// The smart tool (S), without a Segment Anything model: as the cursor rests on a superpixel, the
// connected superpixels that resemble it (by the latest epoch's predictions and certainty, or by
// standardised features before any epoch) are proposed at three scales, from strict and near to
// loose and far; the wheel or a right-click cycles the scales, a click labels the one shown with
// the current category (Alt: removes labels), as one undoable batch.

import type { SlidelabelApi } from '../../api/slidelabel';
import type { Point } from '../../state/brush';
import { h, replace } from '../../ui/dom';
import { showError } from '../../ui/notices';
import type { Labelling } from './labelling';
import type { SlideSession } from './slideSession';

/** How long the cursor rests before a proposal is asked for (ms). */
const REST_MS = 60;
/** Screen pixels a click may move and still label (more is a pan). */
const CLICK_SLOP_PX = 4;

export class SmartTool {
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The seed being proposed for, and its regions per scale once they came. */
  private seed = 0;
  private regions: number[][] | null = null;
  private scale = 0;
  private shown: number[] = [];
  private down: { x: number; y: number } | null = null;
  private readonly hint: HTMLElement;

  constructor(
    private readonly api: SlidelabelApi,
    private readonly projectId: number,
    private readonly session: SlideSession,
    private readonly labelling: Labelling,
  ) {
    const node = session.viewer.node;
    this.hint = h('div', { class: 'smart-hint', id: 'smart-hint', 'aria-live': 'polite' });
    this.hint.style.display = 'none';
    node.parentElement!.appendChild(this.hint);
    node.addEventListener('mousemove', this.onMove);
    node.addEventListener('mouseleave', () => this.clear());
    node.addEventListener('wheel', this.onWheel, { capture: true, passive: false });
    node.addEventListener('contextmenu', this.onContextMenu, true);
    node.addEventListener('mousedown', this.onDown, true);
    node.addEventListener('mouseup', this.onUp, true);
    labelling.onChange(() => labelling.tool !== 'smart' && this.clear());
  }

  private get active(): boolean {
    return this.labelling.tool === 'smart';
  }

  private readonly onMove = (event: MouseEvent): void => {
    if (!this.active || event.buttons) return;
    clearTimeout(this.timer);
    const point = this.session.viewer.pointAt(event.clientX, event.clientY);
    const restedAt = performance.now(); // the timing includes the wait that tells a rest from a move
    this.timer = setTimeout(() => void this.propose(point, restedAt), REST_MS);
  };

  /** Asks for the three regions around the superpixel at `point`, unless they are shown already. */
  private async propose(point: Point, restedAt: number): Promise<void> {
    const seed = this.session.viewer.superpixelAt(point);
    if (seed === this.seed) return;
    this.clear();
    if (!seed) return;
    this.seed = seed;
    try {
      const found = await this.api.growScales(this.projectId, this.session.slide.id, seed);
      if (this.seed !== seed) return; // the cursor moved on meanwhile
      this.regions = found.map((f) => f.superpixels);
      this.scale = Math.min(this.scale, found.length - 1);
      this.show();
      this.session.viewer.afterFrame(() => performance.measure('smart-rest-to-outline', { start: restedAt }));
    } catch (error) {
      this.clear();
      showError('Could not propose a region', error);
    }
  }

  private show(): void {
    this.session.recolour(this.shown);
    this.shown = this.regions?.[this.scale] ?? [];
    this.session.highlight(this.shown);
    this.hint.style.display = this.shown.length ? 'block' : 'none';
    this.hint.dataset.scale = String(this.scale + 1);
    this.hint.dataset.count = String(this.shown.length);
    replace(this.hint, h('strong', {}, `Scale ${this.scale + 1} of ${this.regions?.length ?? 0}: `),
      `${this.shown.length} superpixels · wheel or right-click: another scale · click: label · Alt+click: remove`);
  }

  private cycle(by: number): void {
    if (!this.regions) return;
    this.scale = (this.scale + by + this.regions.length) % this.regions.length;
    this.show();
  }

  private readonly onWheel = (event: WheelEvent): void => {
    if (!this.active || !this.regions || event.ctrlKey) return; // Ctrl+wheel still zooms
    event.preventDefault();
    event.stopPropagation();
    this.cycle(event.deltaY > 0 ? 1 : -1);
  };

  private readonly onContextMenu = (event: MouseEvent): void => {
    if (!this.active || !this.regions) return;
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
    this.regions = null;
    this.seed = 0;
    this.hint.style.display = 'none';
  };

  private clear(): void {
    clearTimeout(this.timer);
    this.session.recolour(this.shown);
    this.shown = [];
    this.regions = null;
    this.seed = 0;
    this.hint.style.display = 'none';
  }

  destroy(): void {
    clearTimeout(this.timer);
    this.hint.remove();
  }
}
