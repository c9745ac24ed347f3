// Shapes drawn over the slide (polygon, lasso) and a proposed grown region, as pure state.
// Coordinates are level-0 pixels; the server says which superpixels a closed shape covers.
import type { CentroidIndex, Point } from './brush';

/** A polygon being drawn: click adds a vertex, double-click (or Enter) closes it. */
export class PolygonDraft {
  readonly points: Point[] = [];

  /** Adds a vertex unless it repeats the last one within `tolerance` (a double-click's second click). */
  add(point: Point, tolerance = 0): void {
    const last = this.points[this.points.length - 1];
    if (last && Math.hypot(last.x - point.x, last.y - point.y) <= tolerance) return;
    this.points.push(point);
  }

  removeLast(): void {
    this.points.pop();
  }

  /** Whether enough distinct vertices exist to enclose an area. */
  get closable(): boolean {
    return this.points.length >= 3;
  }

  /** The vertices of the closed polygon, the draft emptied; null when fewer than three. */
  close(): Point[] | null {
    if (!this.closable) return null;
    return this.points.splice(0, this.points.length);
  }
}

/**
 * A freehand lasso: the pointer's path, keeping a point only once it is `spacing` from the last
 * kept one (level-0 px), so a slow drag does not send thousands of vertices.
 */
export class LassoPath {
  readonly points: Point[] = [];

  constructor(private readonly spacing: number) {}

  /** Returns whether the point was kept. */
  moveTo(point: Point): boolean {
    const last = this.points[this.points.length - 1];
    if (last && Math.hypot(last.x - point.x, last.y - point.y) < this.spacing) return false;
    this.points.push(point);
    return true;
  }

  /** The closed path; null when it encloses nothing (fewer than three points). */
  close(): Point[] | null {
    return this.points.length >= 3 ? [...this.points] : null;
  }
}

/** Whether `point` lies inside `polygon` (even-odd rule; the ring is closed implicitly). */
export function insidePolygon(point: Point, polygon: readonly Point[]): boolean {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i, i += 1) {
    const a = polygon[i];
    const b = polygon[j];
    if ((a.y > point.y) !== (b.y > point.y) && point.x < a.x + ((point.y - a.y) * (b.x - a.x)) / (b.y - a.y)) {
      inside = !inside;
    }
  }
  return inside;
}

/**
 * The superpixels whose centroid lies inside `polygon`: an instant preview of what the server's
 * at-least-half rule will take (they differ only along the outline).
 */
export function centroidsInside(index: CentroidIndex, polygon: readonly Point[]): number[] {
  const xs = polygon.map((p) => p.x);
  const ys = polygon.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const centre = { x: (x0 + x1) / 2, y: (y0 + y1) / 2 };
  return index.withPoints(centre, Math.hypot(x1 - x0, y1 - y0) / 2)
    .filter(([, point]) => insidePolygon(point, polygon)).map(([id]) => id);
}

/** Vertices as the [x, y] pairs the server takes. */
export function vertexPairs(points: readonly Point[]): [number, number][] {
  return points.map((p) => [Math.round(p.x * 100) / 100, Math.round(p.y * 100) / 100]);
}

/** A region proposed by grow to similar: its superpixels and each one's neighbour steps from the seed. */
export class GrowProposal {
  readonly maxSteps: number;

  constructor(readonly seed: number, readonly superpixels: readonly number[], readonly steps: readonly number[]) {
    this.maxSteps = steps.reduce((m, s) => Math.max(m, s), 0);
  }

  /** The superpixels at most `reach` steps from the seed. */
  within(reach: number): number[] {
    return this.superpixels.filter((_, i) => this.steps[i] <= reach);
  }
}

/** `left, top, right, bottom` in level-0 px. */
export type Region = readonly [number, number, number, number];

/**
 * Whether the region embedded for the smart tool still serves the view: it holds the visible box
 * and was read at about the view's resolution (its long side within `ratio` of the view's), so a
 * pan inside it or a small zoom keeps it and anything more asks for the new view's embedding.
 */
export function regionServes(embedded: Region | null, visible: Region, ratio = 1.5): boolean {
  if (!embedded) return false;
  const inside = embedded[0] <= visible[0] + 1 && embedded[1] <= visible[1] + 1
    && embedded[2] >= visible[2] - 1 && embedded[3] >= visible[3] - 1;
  const side = (r: Region) => Math.max(r[2] - r[0], r[3] - r[1]);
  return inside && side(embedded) <= ratio * side(visible);
}

/** The smart tool's suggestion at one point: three scales, one shown, cycled by the wheel or right-click. */
export class SuggestionScales<T> {
  private index: number;

  constructor(readonly scales: readonly T[], start = 0) {
    this.index = scales.length ? Math.min(Math.max(start, 0), scales.length - 1) : 0;
  }

  get scale(): number {
    return this.index;
  }

  get current(): T | undefined {
    return this.scales[this.index];
  }

  /** Moves `by` scales, wrapping round. */
  cycle(by: number): void {
    const n = this.scales.length;
    if (n) this.index = (((this.index + by) % n) + n) % n;
  }
}
