import { describe, expect, it } from 'vitest';
import { categoryForKey } from '../src/state/hotkeys';
import { PAN_STEP, viewActionForKey, ZOOM_STEP } from '../src/state/viewKeys';

describe('view keys', () => {
  it('pans with the arrows in labelling mode, with or without Shift', () => {
    expect(viewActionForKey({ key: 'ArrowRight' }, 'label')).toEqual({ kind: 'pan', dx: PAN_STEP, dy: 0 });
    expect(viewActionForKey({ key: 'ArrowLeft' }, 'label')).toEqual({ kind: 'pan', dx: -PAN_STEP, dy: 0 });
    expect(viewActionForKey({ key: 'ArrowUp', shiftKey: true }, 'label')).toEqual({ kind: 'pan', dx: 0, dy: -PAN_STEP });
    expect(viewActionForKey({ key: 'ArrowDown' }, 'label')).toEqual({ kind: 'pan', dx: 0, dy: PAN_STEP });
  });

  it('leaves the plain arrows to the cards in guided mode and pans with Shift+arrows', () => {
    for (const key of ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown']) {
      expect(viewActionForKey({ key }, 'guided')).toBeNull();
    }
    expect(viewActionForKey({ key: 'ArrowRight', shiftKey: true }, 'guided')).toEqual({ kind: 'pan', dx: PAN_STEP, dy: 0 });
  });

  it('zooms with + and - (and their unshifted keys) and fits with 0', () => {
    for (const mode of ['label', 'guided'] as const) {
      expect(viewActionForKey({ key: '+', shiftKey: true }, mode)).toEqual({ kind: 'zoom', levels: ZOOM_STEP });
      expect(viewActionForKey({ key: '=' }, mode)).toEqual({ kind: 'zoom', levels: ZOOM_STEP });
      expect(viewActionForKey({ key: '-' }, mode)).toEqual({ kind: 'zoom', levels: -ZOOM_STEP });
      expect(viewActionForKey({ key: '0' }, mode)).toEqual({ kind: 'fit' });
    }
  });

  it('leaves Ctrl, Cmd and Alt combinations to the browser and to undo/redo', () => {
    expect(viewActionForKey({ key: '+', ctrlKey: true }, 'label')).toBeNull();
    expect(viewActionForKey({ key: '-', metaKey: true }, 'label')).toBeNull();
    expect(viewActionForKey({ key: 'ArrowLeft', altKey: true }, 'label')).toBeNull();
  });

  it('never takes a key that names a category by position, nor the tool and overlay keys', () => {
    const categories = Array.from({ length: 9 }, (_, i) => ({ id: i + 1, hotkey: null, position: i }));
    for (const key of ['1', '2', '3', '4', '5', '6', '7', '8', '9']) {
      expect(categoryForKey(key, categories)).not.toBeNull();
      expect(viewActionForKey({ key }, 'label')).toBeNull();
      expect(viewActionForKey({ key }, 'guided')).toBeNull();
    }
    expect(categoryForKey('0', categories)).toBeNull();
    for (const key of ['v', 'b', 'e', 'o', 'l', '[', ']', 'Enter', 'z', 'y']) {
      expect(viewActionForKey({ key }, 'label')).toBeNull();
    }
  });
});
