// The deep-zoom slide with the superpixel overlay, on GeoJS. The overlay is a pixelmap layer:
// the GPU reads each pixel's superpixel id from the index tiles (id = R + 256 G + 65536 B) and
// looks its colour up in a table of one RGBA per superpixel, so a new label recolours by
// updating one table entry (and uploading its row of the table), with no tile fetched again.
// Coordinates are level-0 pixels.

import geo, { type Bounds, type GeoPoint, type Layer, type Map as GeoMap } from 'geojs';
import type { TileMetadata } from '../api/types';
import type { Point } from '../state/brush';
import type { ViewAction } from '../state/viewKeys';
import { installOverlayShader, type OverlayShader } from './overlayShader';

export interface ViewerSource {
  metadata: TileMetadata;
  /** `{z}/{x}/{y}` templates of the slide tiles and of the superpixel index tiles. */
  tileUrl: string;
  indexUrl: string;
  /** Number of superpixels N: the colour table has N + 1 entries. */
  superpixels: number;
}

export type Box = readonly [number, number, number, number];

/** What GeoJS's quad search gives for a point: per quad hit, its image and the point's place in it (0..1). */
interface QuadSearch {
  pointSearch(point: GeoPoint): {
    index: number[];
    extra: Record<number, { basis?: GeoPoint; _quad?: { image?: HTMLImageElement; m_srcImage?: HTMLImageElement } }>;
  };
}

/** GeoJS tile layer internals used to fetch the tiles of a view before moving there. */
interface PrefetchingLayer {
  _options: { tileRounding(zoom: number): number; maxLevel: number };
  prefetch(level: number, bounds: Bounds): unknown;
}

const tilePixels = new WeakMap<HTMLImageElement, Uint8ClampedArray>();

/** The RGBA pixels of a loaded index tile, read once. */
function indexPixels(image: HTMLImageElement): Uint8ClampedArray {
  let pixels = tilePixels.get(image);
  if (!pixels) {
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext('2d', { willReadFrequently: true })!;
    context.drawImage(image, 0, 0);
    pixels = context.getImageData(0, 0, image.width, image.height).data;
    tilePixels.set(image, pixels);
  }
  return pixels;
}

export class SlideViewer {
  readonly map: GeoMap;
  private readonly slideLayer: Layer;
  private readonly overlay: Layer;
  private readonly shader: OverlayShader;
  private table: Uint8ClampedArray;
  private readonly viewListeners: (() => void)[] = [];
  private ring: HTMLElement | null = null;
  private marked: Box | null = null;

  constructor(readonly node: HTMLElement, private readonly source: ViewerSource) {
    const { metadata } = source;
    const params = geo.util.pixelCoordinateParams(node, metadata.width, metadata.height, metadata.tile_width,
      metadata.tile_height);
    params.map.max = (params.map.max as number) + 2; // zoom past full resolution, to click small superpixels
    // GeoJS reads WebGL context options from this global (its only way in). Tiles are
    // axis-aligned quads that multisampling cannot improve; without it a software GPU renders
    // and resolves a quarter of the samples.
    (window as { overrideContextAttributes?: WebGLContextAttributes }).overrideContextAttributes = { antialias: false };
    // GeoJS's own keys (digits zoom to fixed levels, arrows pan while the map has focus) would
    // clash with the category keys: the workspace maps keys to `apply` instead (state/viewKeys).
    const interactor = geo.mapInteractor({ keyboard: { actions: {}, focusHighlight: false } });
    this.map = geo.map({ ...params.map, node, interactor });
    // Both layers keep one level of tiles (GeoJS keeps the coarser ones by default and draws them
    // all, one under the other): each redraw then shades the view once per layer instead of once
    // per level and layer, which on a software GPU held every frame, the guided cards' too, back
    // by hundreds of ms. Old tiles stay until the new ones cover them; an area never seen before
    // is blank until its tiles arrive (guided mode fetches them before moving there).
    this.slideLayer = this.map.createLayer('osm', {
      ...params.layer, url: source.tileUrl, crossDomain: undefined, keepLower: false });
    this.table = new Uint8ClampedArray((source.superpixels + 1) * 4);
    this.overlay = this.map.createLayer('pixelmap', {
      ...params.layer,
      url: source.indexUrl,
      crossDomain: undefined,
      // Coarser index tiles drawn under the finest would also stack translucent colours and
      // outlines (thick blocky outlines).
      keepLower: false,
      // The colours come from the overlay shader's own table (./colourTexture); GeoJS's pixelmap
      // table, which it uploads whole on every change, is left at one unused entry.
      data: [0],
      style: { color: { r: 0, g: 0, b: 0, a: 0 } },
    });
    this.shader = installOverlayShader(this.overlay, metadata); // before the first draw builds the shader
    for (const event of [geo.event.pan, geo.event.zoom]) this.map.geoOn(event, () => this.viewChanged());
  }

  /** Shows `table` ((N + 1) x RGBA) as the overlay's colours. */
  setColours(table: Uint8ClampedArray): void {
    this.table = table;
    this.shader.setColours(table);
    this.overlay.draw();
  }

  /** Redraws superpixels `first..last` after their entries of the table changed in place. */
  coloursChanged(first: number, last: number): void {
    this.shader.coloursChanged(this.table, first, last);
    this.overlay.draw();
  }

  setOpacity(opacity: number): void {
    this.shader.setOpacity(opacity);
    this.overlay.draw();
  }

  setOverlayVisible(visible: boolean): void {
    this.overlay.visible(visible);
    this.overlay.draw();
  }

  /** Outlines superpixels (a shader that compares each pixel's id with its neighbours'). */
  setBoundaries(visible: boolean): void {
    this.shader.setOutlines(visible);
    this.overlay.draw();
  }

  /**
   * The superpixel under `point` (level-0 px) as the loaded index tiles say; 0 when none. GeoJS
   * finds the tile and the position in it; the tile's pixels are read once into memory (a canvas
   * read back per click costs a GPU round trip), so later look-ups, brush strokes included, are
   * array reads.
   */
  superpixelAt(point: GeoPoint): number {
    const quad = this.overlay.features().find((feature) => feature.featureType === 'quad') as unknown as QuadSearch;
    const found = quad?.pointSearch(point);
    for (let k = (found?.index.length ?? 0) - 1; k >= 0; k -= 1) { // the last is the topmost (finest) tile
      const hit = found!.extra[found!.index[k]];
      const image = hit?._quad?.m_srcImage ?? hit?._quad?.image;
      if (!image || !hit.basis) continue;
      const pixels = indexPixels(image);
      const x = Math.min(image.width - 1, Math.floor(hit.basis.x * image.width));
      const y = Math.min(image.height - 1, Math.floor(hit.basis.y * image.height));
      const at = (y * image.width + x) * 4;
      const id = pixels[at] + pixels[at + 1] * 256 + pixels[at + 2] * 65536;
      return id > 0 && id <= this.source.superpixels ? id : 0;
    }
    return 0;
  }

  /** The level-0 point under a mouse event's client position. */
  pointAt(clientX: number, clientY: number): Point {
    const rect = this.node.getBoundingClientRect();
    return this.map.displayToGcs({ x: clientX - rect.left, y: clientY - rect.top });
  }

  /** Level-0 pixels per screen pixel at the current zoom. */
  level0PerScreenPixel(): number {
    const a = this.map.displayToGcs({ x: 0, y: 0 });
    const b = this.map.displayToGcs({ x: 100, y: 0 });
    return Math.hypot(b.x - a.x, b.y - a.y) / 100;
  }

  /** Shows `box` (level-0 x_min, y_min, x_max, y_max) with `context` times its size around it. */
  focus(box: Box, context = 4): void {
    const view = this.viewOf(box, context);
    // The zoom is set without events and the centre with them, so the layers fetch and draw
    // tiles once, for the final view (map.zoom alone would fetch around the old centre first).
    if (view.zoom !== this.map.zoom()) this.map.zoom(view.zoom, undefined, false, false, true);
    this.map.center(view.center);
  }

  /**
   * Fetches the slide and index tiles that `focus(box, context)` will show, so that moving there
   * later draws at once, in one frame, instead of once per tile as they arrive. Starts once the
   * tiles of the current view are in, so it never delays them.
   */
  prefetch(box: Box, context = 4): void {
    this.map.onIdle(() => this.fetchTilesOf(box, context));
  }

  private fetchTilesOf(box: Box, context: number): void {
    const view = this.viewOf(box, context);
    const mapGcs = this.map.gcs();
    const centre = geo.transform.transformCoordinates(this.map.ingcs(), mapGcs, view.center);
    const bounds = this.map.boundsFromZoomAndCenter(view.zoom, centre, 0, null);
    for (const layer of [this.slideLayer, this.overlay] as unknown as PrefetchingLayer[]) {
      const level = Math.min(layer._options.tileRounding(view.zoom), layer._options.maxLevel);
      layer.prefetch(level, bounds);
    }
  }

  /**
   * The zoom and centre that show `box` with `context` times its size around it. A zoom within
   * half a level of the current one is kept: following cards of alike size then only pans, on
   * the tiles already loaded.
   */
  private viewOf(box: Box, context: number): { zoom: number; center: GeoPoint } {
    const center = { x: (box[0] + box[2]) / 2, y: (box[1] + box[3]) / 2 };
    const half = (Math.max(box[2] - box[0], box[3] - box[1], 16) * context) / 2;
    const fit = this.map.zoomAndCenterFromBounds({
      left: center.x - half, right: center.x + half, top: center.y - half, bottom: center.y + half });
    const zoom = Math.abs(fit.zoom - this.map.zoom()) < 0.5 ? this.map.zoom() : fit.zoom;
    return { zoom, center };
  }

  /** Pans, zooms or fits the view at once (no animation: a key press shows its result in the next frame). */
  apply(action: ViewAction): void {
    if (action.kind === 'pan') {
      const size = this.map.size();
      this.map.pan({ x: -action.dx * size.width, y: -action.dy * size.height });
    } else if (action.kind === 'zoom') {
      this.map.zoom(this.map.zoom() + action.levels);
    } else {
      const { width, height } = this.source.metadata;
      const view = this.map.zoomAndCenterFromBounds({ left: 0, top: 0, right: width, bottom: height });
      this.map.zoom(view.zoom, undefined, false, false, true);
      this.map.center({ x: width / 2, y: height / 2 });
    }
  }

  /** Shows the point (level-0 px) at the centre, keeping the zoom. */
  centreOn(point: Point): void {
    this.map.center(point);
  }

  /** The visible part of the slide in level-0 px. */
  visibleBox(): Box {
    const a = this.map.displayToGcs({ x: 0, y: 0 });
    const size = this.map.size();
    const b = this.map.displayToGcs({ x: size.width, y: size.height });
    return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
  }

  /** Rings `box` (level-0 px) on screen, following pans and zooms; null removes the ring. */
  mark(box: Box | null): void {
    this.marked = box;
    if (!this.ring) {
      this.ring = document.createElement('div');
      this.ring.className = 'superpixel-ring';
      this.node.parentElement?.appendChild(this.ring);
      this.onViewChange(() => this.placeRing());
    }
    this.placeRing();
  }

  private placeRing(): void {
    if (!this.ring) return;
    this.ring.style.display = this.marked ? 'block' : 'none';
    if (!this.marked) return;
    const a = this.map.gcsToDisplay({ x: this.marked[0], y: this.marked[1] });
    const b = this.map.gcsToDisplay({ x: this.marked[2], y: this.marked[3] });
    const pad = 6;
    Object.assign(this.ring.style, {
      left: `${Math.min(a.x, b.x) - pad}px`, top: `${Math.min(a.y, b.y) - pad}px`,
      width: `${Math.abs(b.x - a.x) + 2 * pad}px`, height: `${Math.abs(b.y - a.y) + 2 * pad}px`,
    });
  }

  onViewChange(listener: () => void): void {
    this.viewListeners.push(listener);
  }

  onClick(handler: (point: Point, event: MouseEvent) => void): void {
    this.map.geoOn(geo.event.mouseclick, (event) => {
      if (event.buttonsDown?.left) handler(event.geo, window.event as MouseEvent);
    });
  }

  /**
   * Calls `then` once the frame with the latest changes is drawn: GeoJS renders in the animation
   * frame it scheduled when asked to draw, and callbacks run in the order they were scheduled.
   */
  afterFrame(then: () => void): void {
    requestAnimationFrame(then);
  }

  destroy(): void {
    this.ring?.remove();
    this.map.exit();
  }

  private viewChanged(): void {
    for (const listener of this.viewListeners) listener();
  }
}
