import { describe, expect, it } from 'vitest';
import { ColourTexture, WIDTH, rowsFor } from '../src/viewer/colourTexture';

/** A WebGL context that records the uploads: [call, y offset, rows, first bytes]. */
function recordingGl() {
  const uploads: [string, number, number, number[]][] = [];
  const gl = {
    TEXTURE0: 0x84c0, TEXTURE_2D: 1, TEXTURE_WRAP_S: 2, TEXTURE_WRAP_T: 3, CLAMP_TO_EDGE: 4, TEXTURE_MIN_FILTER: 5,
    TEXTURE_MAG_FILTER: 6, NEAREST: 7, UNPACK_FLIP_Y_WEBGL: 8, RGBA: 9, UNSIGNED_BYTE: 10,
    flip: true,
    activeTexture() {}, bindTexture() {}, texParameteri() {}, isContextLost: () => false, createTexture: () => ({}),
    getParameter() { return this.flip; },
    pixelStorei(_: number, value: boolean) { this.flip = value; },
    texImage2D(_t: number, _l: number, _f: number, width: number, height: number, _b: number, _ff: number, _ty: number,
      data: Uint8Array) {
      expect(width * height * 4).toBe(data.length);
      expect(this.flip).toBe(false);
      uploads.push(['whole', 0, height, [...data.subarray(0, 8)]]);
    },
    texSubImage2D(_t: number, _l: number, _x: number, y: number, width: number, rows: number, _f: number, _ty: number,
      data: Uint8Array) {
      expect(width * rows * 4).toBe(data.length);
      uploads.push(['rows', y, rows, [...data.subarray(0, 8)]]);
    },
  };
  return { gl: gl as unknown as WebGLRenderingContext & { flip: boolean }, uploads };
}

describe('ColourTexture', () => {
  const entries = 2 * WIDTH + 5; // three rows, the last one partly used
  const table = () => new Uint8ClampedArray(entries * 4).map((_, i) => i % 251);

  it('uploads the whole table first, then only the rows of the entries that changed', () => {
    const { gl, uploads } = recordingGl();
    const texture = new ColourTexture();
    const colours = table();
    texture.setTable(colours);
    expect(texture.rows).toBe(rowsFor(entries));
    expect(texture.rows).toBe(3);
    texture.bind(gl, 2);
    expect(uploads).toEqual([['whole', 0, 3, [...colours.subarray(0, 8)]]]);
    expect(gl.flip).toBe(true); // GeoJS's unpack state is given back
    texture.bind(gl, 2);
    expect(uploads).toHaveLength(1); // nothing changed, nothing sent

    colours.fill(200, (WIDTH + 1) * 4, (WIDTH + 3) * 4);
    texture.changed(colours, WIDTH + 1, WIDTH + 2);
    texture.bind(gl, 2);
    expect(uploads[1]).toEqual(['rows', 1, 1, [...colours.subarray(WIDTH * 4, WIDTH * 4 + 8)]]);

    texture.changed(colours, 3, 3);
    texture.changed(colours, 2 * WIDTH + 4, 2 * WIDTH + 4);
    texture.bind(gl, 2);
    expect(uploads[2].slice(0, 3)).toEqual(['rows', 0, 3]);
  });

  it('uploads whole again for a new table or a new context', () => {
    const { gl, uploads } = recordingGl();
    const texture = new ColourTexture();
    texture.setTable(table());
    texture.bind(gl, 2);
    texture.setTable(new Uint8ClampedArray(8).fill(9));
    expect(texture.rows).toBe(1);
    texture.bind(gl, 2);
    expect(uploads[1]).toEqual(['whole', 0, 1, [9, 9, 9, 9, 9, 9, 9, 9]]);
    const other = recordingGl();
    texture.bind(other.gl, 2);
    expect(other.uploads.map((u) => u[0])).toEqual(['whole']);
  });
});
