// The deep-zoom slide with the superpixel overlay, on GeoJS. The overlay is a pixelmap layer:
// the GPU reads each pixel's superpixel id from the index tiles (id = R + 256 G + 65536 B) and
// looks its colour up in a table of one RGBA per superpixel, so a new label recolours by
// updating one table entry, with no tile fetched again. Coordinates are level-0 pixels.

import geo, { type GeoPoint, type Layer, type Map as GeoMap } from 'geojs';
import type { TileMetadata } from '../api/types';
import type { Point } from '../state/brush';
import { boundaryShader } from './boundaries';

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
  private readonly overlay: Layer;
  private table: Uint8ClampedArray;
  private readonly viewListeners: (() => void)[] = [];
  private ring: HTMLElement | null = null;
  private marked: Box | null = null;

  constructor(readonly node: HTMLElement, private readonly source: ViewerSource) {
    const { metadata } = source;
    const params = geo.util.pixelCoordinateParams(node, metadata.width, metadata.height, metadata.tile_width,
      metadata.tile_height);
    params.map.max = (params.map.max as number) + 2; // zoom past full resolution, to click small superpixels
    this.map = geo.map({ ...params.map, node });
    this.map.createLayer('osm', { ...params.layer, url: source.tileUrl, crossDomain: undefined });
    this.table = new Uint8ClampedArray((source.superpixels + 1) * 4);
    const table = () => this.table;
    this.overlay = this.map.createLayer('pixelmap', {
      ...params.layer,
      url: source.indexUrl,
      crossDomain: undefined,
      data: new Array(source.superpixels + 1).fill(0),
      style: {
        color: (_d: unknown, i: number) => {
          const t = table();
          return { r: t[i * 4] / 255, g: t[i * 4 + 1] / 255, b: t[i * 4 + 2] / 255, a: t[i * 4 + 3] / 255 };
        },
      },
    });
    boundaryShader(this.overlay, metadata, false); // before the first draw builds the overlay's shader
    for (const event of [geo.event.pan, geo.event.zoom]) this.map.geoOn(event, () => this.viewChanged());
  }

  /** Shows `table` ((N + 1) x RGBA) as the overlay's colours. */
  setColours(table: Uint8ClampedArray): void {
    this.table = table;
    this.overlay.indexModified(0, this.source.superpixels).draw();
  }

  /** Redraws superpixels `first..last` after their entries of the table changed in place. */
  coloursChanged(first: number, last: number): void {
    this.overlay.indexModified(first, last).draw();
  }

  setOpacity(opacity: number): void {
    this.overlay.opacity(opacity);
  }

  setOverlayVisible(visible: boolean): void {
    this.overlay.visible(visible);
    this.overlay.draw();
  }

  /** Outlines superpixels (a shader that compares each pixel's id with its neighbours'). */
  setBoundaries(visible: boolean): void {
    boundaryShader(this.overlay, this.source.metadata, visible);
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
    const [cx, cy] = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2];
    const half = (Math.max(box[2] - box[0], box[3] - box[1], 16) * context) / 2;
    const view = this.map.zoomAndCenterFromBounds({ left: cx - half, right: cx + half, top: cy - half, bottom: cy + half });
    this.map.zoom(view.zoom);
    this.map.center({ x: cx, y: cy });
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
