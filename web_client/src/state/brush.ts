// Brush strokes: which superpixels a stroke covers, gathered into one batch for the server.
// Coordinates are level-0 pixels (`x_base`, `y_base`).

export interface Point {
  x: number;
  y: number;
}

/**
 * Superpixel centroids in a uniform grid of `cellPx` level-0 pixels, for "which superpixels lie
 * within r of this point" in time proportional to the answer. Typed arrays throughout (cells as
 * offsets into one array of rows, sorted by cell), so a million centroids take 16 MB.
 */
export class CentroidIndex {
  private readonly columns: number;
  private readonly rows: number;
  /** The rows (positions in `ids`) of cell k are `members[starts[k]..starts[k + 1]]`. */
  private readonly starts: Int32Array;
  private readonly members: Int32Array;

  /** `ids[i]` has its centroid at (`xy[2 i]`, `xy[2 i + 1]`) = (x_base, y_base). */
  constructor(
    private readonly ids: ArrayLike<number>,
    private readonly xy: ArrayLike<number>,
    private readonly cellPx = 256,
  ) {
    let maxX = 0;
    let maxY = 0;
    for (let i = 0; i < ids.length; i += 1) {
      maxX = Math.max(maxX, xy[2 * i]);
      maxY = Math.max(maxY, xy[2 * i + 1]);
    }
    this.columns = Math.floor(maxX / cellPx) + 1;
    this.rows = Math.floor(maxY / cellPx) + 1;
    const cellOf = new Int32Array(ids.length);
    this.starts = new Int32Array(this.columns * this.rows + 1);
    for (let i = 0; i < ids.length; i += 1) {
      cellOf[i] = this.key(Math.floor(Math.max(0, xy[2 * i]) / cellPx), Math.floor(Math.max(0, xy[2 * i + 1]) / cellPx));
      this.starts[cellOf[i] + 1] += 1;
    }
    for (let k = 1; k < this.starts.length; k += 1) this.starts[k] += this.starts[k - 1];
    this.members = new Int32Array(ids.length);
    const next = this.starts.slice(0, -1);
    for (let i = 0; i < ids.length; i += 1) this.members[next[cellOf[i]]++] = i;
  }

  private key(column: number, row: number): number {
    return row * this.columns + column;
  }

  /** Ids of the superpixels whose centroid is within `radius` of `point`. */
  within(point: Point, radius: number): number[] {
    return this.rowsWithin(point, radius).map((i) => this.ids[i]);
  }

  /** `within`, with each one's centroid. */
  withPoints(point: Point, radius: number): [number, Point][] {
    return this.rowsWithin(point, radius).map((i) => [this.ids[i], { x: this.xy[2 * i], y: this.xy[2 * i + 1] }]);
  }

  private rowsWithin(point: Point, radius: number): number[] {
    const found: number[] = [];
    const r2 = radius * radius;
    const [c0, c1] = [Math.floor((point.x - radius) / this.cellPx), Math.floor((point.x + radius) / this.cellPx)];
    const [r0, r1] = [Math.floor((point.y - radius) / this.cellPx), Math.floor((point.y + radius) / this.cellPx)];
    for (let row = Math.max(0, r0); row <= Math.min(this.rows - 1, r1); row += 1) {
      for (let column = Math.max(0, c0); column <= Math.min(this.columns - 1, c1); column += 1) {
        const cell = this.key(column, row);
        for (let m = this.starts[cell]; m < this.starts[cell + 1]; m += 1) {
          const i = this.members[m];
          const dx = this.xy[2 * i] - point.x;
          const dy = this.xy[2 * i + 1] - point.y;
          if (dx * dx + dy * dy <= r2) found.push(i);
        }
      }
    }
    return found;
  }

  /** The superpixel whose centroid is nearest to `point`, within `radius`; 0 when none is. */
  nearest(point: Point, radius: number): number {
    let best = 0;
    let bestD2 = radius * radius;
    for (const i of this.rowsWithin(point, radius)) {
      const d2 = (this.xy[2 * i] - point.x) ** 2 + (this.xy[2 * i + 1] - point.y) ** 2;
      if (d2 <= bestD2) [best, bestD2] = [this.ids[i], d2];
    }
    return best;
  }
}

/** Points from `from` to `to` at most `spacing` apart (`to` included, `from` not), so a fast stroke leaves no gaps. */
export function strokePoints(from: Point, to: Point, spacing: number): Point[] {
  const distance = Math.hypot(to.x - from.x, to.y - from.y);
  const steps = Math.max(1, Math.ceil(distance / Math.max(spacing, 1e-9)));
  return Array.from({ length: steps }, (_, i) => ({
    x: from.x + ((to.x - from.x) * (i + 1)) / steps,
    y: from.y + ((to.y - from.y) * (i + 1)) / steps,
  }));
}

/** One stroke of the brush (or eraser): the superpixels it has covered so far, each once. */
export class BrushStroke {
  private readonly covered = new Set<number>();
  private last: Point | null = null;

  constructor(
    private readonly index: CentroidIndex,
    readonly radius: number,
  ) {}

  /**
   * Moves the brush to `point`; `under` is the superpixel under the pointer (0: unknown), so
   * a brush smaller than a superpixel still paints it. Returns the ids covered for the first time.
   */
  moveTo(point: Point, under = 0): number[] {
    const points = this.last ? strokePoints(this.last, point, this.radius / 2) : [point];
    this.last = point;
    const added: number[] = [];
    const add = (id: number) => {
      if (id > 0 && !this.covered.has(id)) {
        this.covered.add(id);
        added.push(id);
      }
    };
    add(under);
    for (const p of points) this.index.within(p, this.radius).forEach(add);
    return added;
  }

  get size(): number {
    return this.covered.size;
  }

  /** The stroke's superpixels in increasing id order: the batch sent to the server. */
  batch(): number[] {
    return [...this.covered].sort((a, b) => a - b);
  }
}
