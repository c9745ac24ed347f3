// The overlay's colour table on the GPU: one RGBA texel per superpixel id, WIDTH texels a row.
// A change of some ids uploads only the rows that hold them (texSubImage2D), so a label on a slide
// of a million segments sends a few KB to the GPU instead of the whole 4 MB table; GeoJS's own
// pixelmap table is uploaded whole on every change.

/** Texels per row: within every WebGL implementation's minimum MAX_TEXTURE_SIZE (4096). */
export const WIDTH = 4096;

/** Rows of a table of `entries` texels. */
export function rowsFor(entries: number): number {
  return Math.max(1, Math.ceil(entries / WIDTH));
}

export class ColourTexture {
  /** The table padded to whole rows: what the GPU holds once uploaded. */
  private texels = new Uint8Array(WIDTH * 4);
  private height = 1;
  private handle: WebGLTexture | null = null;
  private context: WebGLRenderingContext | null = null;
  /** Rows changed since the last upload, [first, last]; null when none. */
  private dirty: [number, number] | null = null;
  private whole = true;

  /** Rows of the texture (the shader's lookup needs them). */
  get rows(): number {
    return this.height;
  }

  /** Takes `table` ((N + 1) x RGBA) as the colours; uploaded whole at the next bind. */
  setTable(table: Uint8ClampedArray): void {
    const entries = table.length / 4;
    if (rowsFor(entries) !== this.height || this.texels.length < table.length) {
      this.height = rowsFor(entries);
      this.texels = new Uint8Array(WIDTH * this.height * 4);
    } else {
      this.texels.fill(0, table.length);
    }
    this.texels.set(table);
    this.whole = true;
  }

  /** Copies entries `first..last` (inclusive) of `table` in; their rows are uploaded at the next bind. */
  changed(table: Uint8ClampedArray, first: number, last: number): void {
    const end = Math.min(table.length / 4, last + 1);
    if (first >= end) return;
    this.texels.set(table.subarray(first * 4, end * 4), first * 4);
    const rows: [number, number] = [Math.floor(first / WIDTH), Math.floor((end - 1) / WIDTH)];
    this.dirty = this.dirty ? [Math.min(this.dirty[0], rows[0]), Math.max(this.dirty[1], rows[1])] : rows;
  }

  /** Binds the texture to texture unit `unit` of `gl`, uploading what changed since the last bind. */
  bind(gl: WebGLRenderingContext, unit: number): void {
    gl.activeTexture(gl.TEXTURE0 + unit);
    if (this.context !== gl || !this.handle || gl.isContextLost()) {
      this.handle = gl.createTexture();
      this.context = gl;
      this.whole = true;
      gl.bindTexture(gl.TEXTURE_2D, this.handle);
      for (const wrap of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) gl.texParameteri(gl.TEXTURE_2D, wrap, gl.CLAMP_TO_EDGE);
      for (const filter of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, filter, gl.NEAREST);
    } else {
      gl.bindTexture(gl.TEXTURE_2D, this.handle);
    }
    if (!this.whole && !this.dirty) return;
    // GeoJS flips its textures on upload; rows here go top to bottom as the shader reads them.
    const flip = gl.getParameter(gl.UNPACK_FLIP_Y_WEBGL);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    if (this.whole) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, WIDTH, this.height, 0, gl.RGBA, gl.UNSIGNED_BYTE, this.texels);
    } else {
      const [first, last] = this.dirty!;
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, first, WIDTH, last - first + 1, gl.RGBA, gl.UNSIGNED_BYTE,
        this.texels.subarray(first * WIDTH * 4, (last + 1) * WIDTH * 4));
    }
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, flip);
    this.whole = false;
    this.dirty = null;
  }
}
