import { describe, expect, it } from 'vitest';
import type { Category } from '../src/api/types';
import { byPosition, mergeQuestion, mergeTargets, renameProblem } from '../src/state/categories';

const category = (id: number, name: string, position: number): Category =>
  ({ id, name, position, color: '#000000', hotkey: null, excluded: false });
const tumour = category(1, 'tumour', 0);
const stroma = category(2, 'stroma', 1);
const glass = category(3, 'glass', 2);
const all = [glass, tumour, stroma];

describe('renaming a category', () => {
  it('accepts a new name, or the same one', () => {
    expect(renameProblem(stroma, 'connective tissue', all)).toBeNull();
    expect(renameProblem(stroma, 'stroma', all)).toBeNull();
  });
  it('refuses an empty name', () => {
    expect(renameProblem(stroma, '   ', all)).toBe('a category needs a name');
  });
  it('refuses the name of another category, whatever its case, and suggests merging', () => {
    expect(renameProblem(stroma, ' Tumour ', all)).toMatch(/already a category called tumour.*merge/);
  });
});

describe('merging a category', () => {
  it('offers every other category, in legend order', () => {
    expect(byPosition(all).map((c) => c.name)).toEqual(['tumour', 'stroma', 'glass']);
    expect(mergeTargets(stroma, all).map((c) => c.name)).toEqual(['tumour', 'glass']);
  });
  it('asks, saying how many labels move', () => {
    expect(mergeQuestion(glass, stroma, 12)).toBe('Merge "glass" into "stroma"? Its 12 labels (all users) and ' +
      'reviews become "stroma" and "glass" is deleted. This cannot be undone.');
    expect(mergeQuestion(glass, stroma, 1)).toMatch(/Its 1 label \(all/);
    expect(mergeQuestion(glass, stroma, 0)).toMatch(/It has no labels/);
    expect(mergeQuestion(glass, stroma, undefined)).toMatch(/Its labels and reviews become "stroma"/);
  });
});
