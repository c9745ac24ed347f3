// The labels of one slide as the viewer shows them, with undo and redo. Pure state: the page
// sends what changed to the server and recolours the overlay.

/** Superpixels set to one category (0: unlabelled), as one request to the server. */
export interface LabelWrite {
  superpixels: number[];
  category: number;
}

/** One user action: which superpixels changed, from what, to what. */
export interface LabelChange {
  superpixels: number[];
  before: number[];
  after: number;
}

/** The writes that set every superpixel of `superpixels` to its entry in `categories`, one per category. */
export function groupWrites(superpixels: readonly number[], categories: readonly number[]): LabelWrite[] {
  const byCategory = new Map<number, number[]>();
  superpixels.forEach((id, i) => {
    const list = byCategory.get(categories[i]) ?? [];
    list.push(id);
    byCategory.set(categories[i], list);
  });
  return [...byCategory].map(([category, ids]) => ({ superpixels: ids, category }));
}

export class LabelStore {
  private readonly undone: LabelChange[] = [];
  private readonly done: LabelChange[] = [];
  /** Labelled superpixels per category id, kept in step with every change (a count over a million entries per label would cost a frame). */
  private readonly tally = new Map<number, number>();

  /** `categories[id]` is the category id of superpixel `id` (0: none); length N + 1. */
  constructor(readonly categories: Uint32Array, private readonly maxUndo = 200) {
    for (let id = 1; id < categories.length; id += 1) if (categories[id]) this.count(categories[id], 1);
  }

  get size(): number {
    return this.categories.length - 1;
  }

  get(id: number): number {
    return this.categories[id] ?? 0;
  }

  get canUndo(): boolean {
    return this.done.length > 0;
  }

  get canRedo(): boolean {
    return this.undone.length > 0;
  }

  /** The category a click with `category` gives `id`: a second click on the same category unlabels. */
  toggled(id: number, category: number): number {
    return this.get(id) === category ? 0 : category;
  }

  /**
   * Sets `ids` to `category` (0 removes the label) as one undoable change; ids out of range and
   * ids that already have that category are left out. Null when nothing changes.
   */
  apply(ids: Iterable<number>, category: number): LabelChange | null {
    const superpixels: number[] = [];
    const before: number[] = [];
    for (const id of new Set(ids)) {
      if (id < 1 || id > this.size || this.categories[id] === category) continue;
      superpixels.push(id);
      before.push(this.categories[id]);
      this.set(id, category);
    }
    if (superpixels.length === 0) return null;
    const change = { superpixels, before, after: category };
    this.done.push(change);
    if (this.done.length > this.maxUndo) this.done.shift();
    this.undone.length = 0;
    return change;
  }

  /** Reverts the latest change; the writes that make the server agree, or null with nothing to undo. */
  undo(): { change: LabelChange; writes: LabelWrite[] } | null {
    const change = this.done.pop();
    if (!change) return null;
    change.superpixels.forEach((id, i) => this.set(id, change.before[i]));
    this.undone.push(change);
    return { change, writes: groupWrites(change.superpixels, change.before) };
  }

  /** Applies the latest undone change again. */
  redo(): { change: LabelChange; writes: LabelWrite[] } | null {
    const change = this.undone.pop();
    if (!change) return null;
    for (const id of change.superpixels) this.set(id, change.after);
    this.done.push(change);
    return { change, writes: [{ superpixels: change.superpixels, category: change.after }] };
  }

  /** Takes back `change` after the server refused it: values restored, gone from the history. */
  discard(change: LabelChange): void {
    change.superpixels.forEach((id, i) => this.set(id, change.before[i]));
    for (const stack of [this.done, this.undone]) {
      const at = stack.indexOf(change);
      if (at >= 0) stack.splice(at, 1);
    }
  }

  /** Labelled superpixels per category id. */
  counts(): Map<number, number> {
    return new Map(this.tally);
  }

  private set(id: number, category: number): void {
    const before = this.categories[id];
    if (before === category) return;
    if (before) this.count(before, -1);
    if (category) this.count(category, 1);
    this.categories[id] = category;
  }

  private count(category: number, by: number): void {
    const count = (this.tally.get(category) ?? 0) + by;
    if (count) this.tally.set(category, count);
    else this.tally.delete(category);
  }
}
