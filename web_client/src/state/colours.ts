// Colour tables of the superpixel overlay: RGBA per superpixel id (index 0: no superpixel,
// transparent), built from a per-superpixel array and the project's category colours.

export type Rgb = readonly [number, number, number];
export type OverlaySource = 'labels' | 'predictions' | 'certainty';

/** `#rrggbb` as [r, g, b] in 0..255; grey for anything else. */
export function parseHex(hex: string): Rgb {
  const match = /^#?([0-9a-f]{6})$/i.exec(hex.trim());
  if (!match) return [128, 128, 128];
  const value = parseInt(match[1], 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

/**
 * Certainty 0..255 on a sequential, colour-blind-safe ramp (cividis end points): dark blue =
 * uncertain, the model's weak spots, yellow = certain.
 */
export function certaintyColour(value: number): Rgb {
  const t = Math.min(1, Math.max(0, value / 255));
  const low: Rgb = [0, 32, 77];
  const mid: Rgb = [124, 123, 120];
  const high: Rgb = [255, 234, 70];
  const [a, b, u] = t < 0.5 ? [low, mid, t * 2] : [mid, high, (t - 0.5) * 2];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * u)) as unknown as Rgb;
}

export interface OverlayStyle {
  source: OverlaySource;
  /** Category id -> colour. */
  colours: ReadonlyMap<number, Rgb>;
  /** 0..1, applied to every coloured superpixel. */
  opacity: number;
}

/** Writes the RGBA of a superpixel whose value (category id, or certainty 0..255) is `value` at `out[at..at+3]`. */
export function colourOf(value: number, style: OverlayStyle, out: Uint8ClampedArray, at: number): void {
  const rgb = style.source === 'certainty' ? certaintyColour(value) : value ? style.colours.get(value) : undefined;
  if (!rgb) {
    out.fill(0, at, at + 4);
    return;
  }
  out[at] = rgb[0];
  out[at + 1] = rgb[1];
  out[at + 2] = rgb[2];
  out[at + 3] = Math.round(255 * style.opacity);
}

/** A table of (N + 1) x RGBA for `values` (length N + 1; entry 0 stays transparent). */
export function buildColourTable(values: ArrayLike<number>, style: OverlayStyle): Uint8ClampedArray {
  const table = new Uint8ClampedArray(values.length * 4);
  for (let id = 1; id < values.length; id += 1) colourOf(values[id], style, table, id * 4);
  return table;
}

/**
 * Recolours `ids` of `table` in place with the value `valueOf(id)` each now shows; returns
 * [smallest, largest] id changed, for a partial upload to the GPU, or null when none was.
 */
export function updateColourTable(
  table: Uint8ClampedArray, ids: Iterable<number>, valueOf: (id: number) => number, style: OverlayStyle,
): [number, number] | null {
  let range: [number, number] | null = null;
  for (const id of ids) {
    if (id < 1 || id * 4 >= table.length) continue;
    colourOf(valueOf(id), style, table, id * 4);
    range = range ? [Math.min(range[0], id), Math.max(range[1], id)] : [id, id];
  }
  return range;
}

/** Category id -> colour of a project's categories. */
export function categoryColours(categories: readonly { id: number; color: string }[]): Map<number, Rgb> {
  return new Map(categories.map((c) => [c.id, parseHex(c.color)]));
}
