// Keys that move the slide view: arrows pan, + and - zoom, 0 shows the whole slide. In guided
// mode the plain arrows move between cards, so there the view pans with Shift+arrows (which
// work in labelling mode too). Digits 1-9 name categories and are never view keys; a project's
// own category hotkey wins over a view key (the workspace asks for the category first).

export type ViewAction =
  /** Pan by a fraction of the view's width (`dx`) and height (`dy`); positive shows what is right / below. */
  | { kind: 'pan'; dx: number; dy: number }
  /** Zoom by `levels` (one level halves or doubles the scale), around the view's centre. */
  | { kind: 'zoom'; levels: number }
  /** The whole slide. */
  | { kind: 'fit' };

export interface KeyPress {
  key: string;
  shiftKey?: boolean;
  ctrlKey?: boolean;
  altKey?: boolean;
  metaKey?: boolean;
}

/** Fraction of the view one arrow press pans. */
export const PAN_STEP = 0.25;
/** Zoom levels one + or - press changes. */
export const ZOOM_STEP = 0.5;

const ARROWS: Record<string, [number, number]> = {
  ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1],
};

/** The view action of a key press in `mode`, or null when the key is not a view key there. */
export function viewActionForKey(press: KeyPress, mode: 'label' | 'guided'): ViewAction | null {
  // Ctrl/Cmd and Alt combinations belong to the browser (Ctrl++ zooms the page) and to undo/redo.
  if (press.ctrlKey || press.metaKey || press.altKey) return null;
  const arrow = ARROWS[press.key];
  if (arrow) {
    if (mode === 'guided' && !press.shiftKey) return null;
    return { kind: 'pan', dx: arrow[0] * PAN_STEP, dy: arrow[1] * PAN_STEP };
  }
  if (press.key === '+' || press.key === '=') return { kind: 'zoom', levels: ZOOM_STEP };
  if (press.key === '-' || press.key === '_') return { kind: 'zoom', levels: -ZOOM_STEP };
  if (press.key === '0') return { kind: 'fit' };
  return null;
}

/** The view keys for the help line of `mode`. */
export function viewKeysHelp(mode: 'label' | 'guided'): string {
  return `${mode === 'guided' ? 'Shift+arrows' : 'arrows'} pan; + / − zoom; 0 whole slide`;
}
