import { describe, expect, it } from 'vitest';
import { categoryForKey, keyOf } from '../src/state/hotkeys';

const categories = [
  { id: 10, hotkey: null, position: 1 },
  { id: 11, hotkey: 't', position: 0 },
  { id: 12, hotkey: '5', position: 2 },
];

describe('hotkeys', () => {
  it('prefers a category hotkey, then 1-9 by position', () => {
    expect(categoryForKey('T', categories)).toBe(11);
    expect(categoryForKey('5', categories)).toBe(12);
    expect(categoryForKey('1', categories)).toBe(11);
    expect(categoryForKey('2', categories)).toBe(10);
    expect(categoryForKey('4', categories)).toBeNull();
    expect(categoryForKey('x', categories)).toBeNull();
  });

  it('names the key of a category', () => {
    expect(keyOf(categories[0], categories)).toBe('2');
    expect(keyOf(categories[1], categories)).toBe('t');
  });
});
