// One slide open in the workspace: its viewer and what is drawn on it (labels, predictions,
// certainty), kept in step when labels change.

import type { SlidelabelApi } from '../../api/slidelabel';
import { ApiError } from '../../api/client';
import type { Category, Slide } from '../../api/types';
import { CentroidIndex } from '../../state/brush';
import {
  buildColourTable, categoryColours, updateColourTable, type OverlaySource, type OverlayStyle,
} from '../../state/colours';
import { LabelStore } from '../../state/labelStore';
import { SlideViewer } from '../../viewer/slideViewer';

/** RGBA of superpixels proposed by grow to similar: white, unlike any category colour, bright on stained tissue. */
const HIGHLIGHT = [255, 255, 255, 235];

export class SlideSession {
  source: OverlaySource = 'labels';
  private table: Uint8ClampedArray;
  private style: OverlayStyle;

  private constructor(
    readonly slide: Slide,
    readonly viewer: SlideViewer,
    readonly store: LabelStore,
    readonly centroids: CentroidIndex,
    public predictions: Uint32Array | null,
    public certainty: Uint8Array | null,
    categories: Category[],
  ) {
    this.style = { source: 'labels', colours: categoryColours(categories), opacity: 1 };
    this.table = buildColourTable(store.categories, this.style);
    viewer.setColours(this.table);
  }

  /** Loads `slide`'s tiles, superpixels, your labels and the latest predictions into a viewer in `node`. */
  static async open(api: SlidelabelApi, projectId: number, slide: Slide, categories: Category[],
    node: HTMLElement): Promise<SlideSession> {
    const [metadata, table, labels] = await Promise.all([
      api.tileMetadata(projectId, slide.id),
      api.superpixelCentroids(projectId, slide.id),
      api.labelArray(projectId, slide.id, 'mine'),
    ]);
    const viewer = new SlideViewer(node, {
      metadata, tileUrl: api.tileUrl(projectId, slide.id), indexUrl: api.indexTileUrl(projectId, slide.id),
      superpixels: table.ids.length,
    });
    const session = new SlideSession(slide, viewer, new LabelStore(labels),
      new CentroidIndex(table.ids, table.xy, 512), null, null, categories);
    await session.loadPredictions(api, projectId);
    return session;
  }

  /** Fetches the latest epoch's predictions and certainty (none before the first epoch). */
  async loadPredictions(api: SlidelabelApi, projectId: number): Promise<void> {
    try {
      [this.predictions, this.certainty] = await Promise.all([
        api.predictionArray(projectId, this.slide.id), api.certaintyArray(projectId, this.slide.id)]);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status >= 500) throw error;
      this.predictions = this.certainty = null; // no epoch yet, or this slide has no features
    }
    if (this.source !== 'labels') this.show(this.source);
  }

  get hasPredictions(): boolean {
    return this.predictions !== null;
  }

  setCategories(categories: Category[]): void {
    this.style = { ...this.style, colours: categoryColours(categories) };
    this.show(this.source);
  }

  /** Draws labels, predictions (your labels over them) or certainty. */
  show(source: OverlaySource): void {
    this.source = source;
    const fallback = source === 'labels' || !this.predictions ? 'labels' : source;
    this.style = { ...this.style, source: fallback };
    let shown: ArrayLike<number> = this.store.categories;
    if (fallback === 'certainty') shown = this.certainty!;
    else if (fallback === 'predictions') shown = this.store.categories.map((label, id) => label || this.predictions![id]);
    this.table = buildColourTable(shown, this.style);
    this.viewer.setColours(this.table);
  }

  /** Recolours `ids` after their labels changed, or shows them as `preview` (a stroke in progress). */
  recolour(ids: Iterable<number>, preview?: number): void {
    if (this.style.source === 'certainty') return;
    const overPredictions = this.style.source === 'predictions';
    const valueOf = (id: number) => preview ?? (this.store.get(id) || (overPredictions ? this.predictions![id] : 0));
    const range = updateColourTable(this.table, ids, valueOf, this.style);
    if (range) this.viewer.coloursChanged(range[0], range[1]);
  }

  /** Paints `ids` in the highlight colour (a proposal); `recolour` gives them their own colours back. */
  highlight(ids: readonly number[]): void {
    let range: [number, number] | null = null;
    for (const id of ids) {
      if (id < 1 || id * 4 >= this.table.length) continue;
      this.table.set(HIGHLIGHT, id * 4);
      range = range ? [Math.min(range[0], id), Math.max(range[1], id)] : [id, id];
    }
    if (range) this.viewer.coloursChanged(range[0], range[1]);
  }

  destroy(): void {
    this.viewer.destroy();
  }
}
