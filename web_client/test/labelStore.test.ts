import { describe, expect, it } from 'vitest';
import { groupWrites, LabelStore } from '../src/state/labelStore';

const store = (n = 10) => new LabelStore(new Uint32Array(n + 1));

describe('LabelStore', () => {
  it('applies a batch as one change and skips unchanged and out-of-range ids', () => {
    const labels = store();
    labels.apply([2], 5);
    const change = labels.apply([1, 2, 3, 3, 0, 11], 5);
    expect(change).toEqual({ superpixels: [1, 3], before: [0, 0], after: 5 });
    expect([...labels.categories.slice(0, 4)]).toEqual([0, 5, 5, 5]);
    expect(labels.apply([1, 2], 5)).toBeNull();
  });

  it('toggles a click on the same category to unlabelled', () => {
    const labels = store();
    labels.apply([4], 2);
    expect(labels.toggled(4, 2)).toBe(0);
    expect(labels.toggled(4, 3)).toBe(3);
  });

  it('undoes and redoes with the writes that make the server agree', () => {
    const labels = store();
    labels.apply([1, 2], 1);
    labels.apply([2, 3], 2);
    const undone = labels.undo();
    expect(undone?.writes).toEqual([{ superpixels: [2], category: 1 }, { superpixels: [3], category: 0 }]);
    expect([...labels.categories.slice(1, 4)]).toEqual([1, 1, 0]);
    expect(labels.canRedo).toBe(true);
    const redone = labels.redo();
    expect(redone?.writes).toEqual([{ superpixels: [2, 3], category: 2 }]);
    expect([...labels.categories.slice(1, 4)]).toEqual([1, 2, 2]);
    labels.undo();
    labels.undo();
    expect(labels.undo()).toBeNull();
    expect([...labels.categories]).toEqual(new Array(11).fill(0));
  });

  it('forgets the redo history on a new change', () => {
    const labels = store();
    labels.apply([1], 1);
    labels.undo();
    labels.apply([2], 1);
    expect(labels.redo()).toBeNull();
  });

  it('discards a change the server refused', () => {
    const labels = store();
    labels.apply([1], 1);
    const refused = labels.apply([1, 2], 2)!;
    labels.discard(refused);
    expect([...labels.categories.slice(1, 3)]).toEqual([1, 0]);
    expect(labels.undo()?.change.after).toBe(1);
  });

  it('bounds the undo history', () => {
    const labels = new LabelStore(new Uint32Array(11), 3);
    for (let id = 1; id <= 5; id += 1) labels.apply([id], 1);
    let undos = 0;
    while (labels.undo()) undos += 1;
    expect(undos).toBe(3);
  });

  it('counts labels per category', () => {
    const labels = store();
    labels.apply([1, 2], 3);
    labels.apply([5], 4);
    expect(labels.counts()).toEqual(new Map([[3, 2], [4, 1]]));
  });

  it('keeps its counts equal to a count of the array through undo, redo, discard and toggles', () => {
    const recount = (labels: LabelStore) => {
      const counts = new Map<number, number>();
      for (const c of labels.categories.subarray(1)) if (c) counts.set(c, (counts.get(c) ?? 0) + 1);
      return counts;
    };
    const labels = new LabelStore(Uint32Array.from([0, 2, 0, 2, 5, 0, 0, 0, 0, 0, 0]));
    expect(labels.counts()).toEqual(new Map([[2, 2], [5, 1]]));
    const steps: (() => unknown)[] = [
      () => labels.apply([1, 2, 3], 5), () => labels.apply([4], 0), () => labels.undo(), () => labels.redo(),
      () => labels.apply([7, 8], 2), () => labels.apply([8], labels.toggled(8, 2)), () => labels.undo(),
      () => labels.undo(), () => labels.discard(labels.apply([9, 10, 1], 3)!), () => labels.redo(),
    ];
    for (const step of steps) {
      step();
      expect(labels.counts()).toEqual(recount(labels));
    }
  });
});

describe('groupWrites', () => {
  it('groups superpixels by the category they go to', () => {
    expect(groupWrites([5, 6, 7], [1, 0, 1])).toEqual([
      { superpixels: [5, 7], category: 1 },
      { superpixels: [6], category: 0 },
    ]);
  });
});
