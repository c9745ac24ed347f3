// The overlay's own fragment shader: the colour of each pixel's superpixel looked up in the
// overlay's own colour table (./colourTexture: a label uploads only the rows it changed; GeoJS's
// pixelmap table, left at one entry, would be uploaded whole), plus superpixel outlines (a pixel
// whose id differs from its right or lower neighbour's in the index tile is a boundary) and the
// overlay's opacity. GeoJS's pixelmap shader is replaced by this one when the pixelmap installs
// it; uniforms turn the outlines on and off and set the opacity without rebuilding anything.
//
// The opacity is the shader's, not the layer's: GeoJS moves a layer whose opacity differs from
// the slide layer's to a WebGL context of its own, which costs a second full-size canvas to
// composite every frame; and the move (on the first opacity change, racing the first tiles)
// cleans the layer's shader programs up against the other context, the likely source of the
// intermittent "detachShader: object does not belong to this context" errors.

import geo, { type Layer } from 'geojs';
import type { TileMetadata } from '../api/types';
import { ColourTexture, WIDTH } from './colourTexture';

/** The texture unit of the colour table (GeoJS uses 0 for the index tiles and 1 for its own table). */
const TABLE_UNIT = 2;

/**
 * Outline colour (dark grey, translucent, times the overlay's opacity): readable on H&E pink and
 * purple and on category colours. The lines are one index-tile pixel wide, so they need more
 * weight than a wide outline would.
 */
const OUTLINE = 'vec4(0.1, 0.1, 0.1, 0.85)';

const FRAGMENT = `/* slidelabel pixelmap with outlines */
varying highp vec2 iTextureCoord;
uniform sampler2D sampler2d;
uniform sampler2D colourTable;
uniform highp float colourRows;
uniform mediump float opacity;
uniform highp vec2 crop;
uniform mediump float outlines;
uniform mediump float overlayOpacity;
uniform highp vec2 texel;

highp float indexAt(highp vec2 coord) {
  highp vec4 v = texture2D(sampler2d, coord);
  return floor(v.r * 255.0 + 0.5) + floor(v.g * 255.0 + 0.5) * 256.0 + floor(v.b * 255.0 + 0.5) * 65536.0;
}

void main(void) {
  if ((crop.s < 1.0 && iTextureCoord.s > crop.s) || (crop.t < 1.0 && 1.0 - iTextureCoord.t > crop.t)) {
    discard;
  }
  highp float index = indexAt(iTextureCoord);
  if (outlines > 0.5 && index > 0.0) {
    highp float right = indexAt(iTextureCoord + vec2(texel.x, 0.0));
    highp float below = indexAt(iTextureCoord + vec2(0.0, texel.y));
    if (right != index || below != index) {
      gl_FragColor = ${OUTLINE} * vec4(1.0, 1.0, 1.0, opacity * overlayOpacity);
      return;
    }
  }
  highp float row = floor(index / ${WIDTH}.0);
  if (row >= colourRows) {
    discard;
  }
  highp vec2 tableCoord = vec2((mod(index, ${WIDTH}.0) + 0.5) / ${WIDTH}.0, (row + 0.5) / colourRows);
  mediump vec4 color = texture2D(colourTable, tableCoord);
  color.a *= opacity * overlayOpacity;
  gl_FragColor = color;
}
`;

interface QuadFeature {
  featureType: string;
  setShader(kind: string, code: string): unknown;
  _hookBuild?: (program: { addUniform(uniform: unknown): void }) => void;
  _hookRenderImageQuads?: (renderState: { m_context: WebGLRenderingContext }, quads: unknown) => void;
}

interface Uniform {
  set(value: unknown): void;
}

/** The overlay's switches: outlines on or off, opacity 0..1, and its colours. */
export interface OverlayShader {
  setOutlines(visible: boolean): void;
  setOpacity(opacity: number): void;
  /** Shows `table` ((N + 1) x RGBA) as the colours, from the next draw. */
  setColours(table: Uint8ClampedArray): void;
  /** Entries `first..last` of `table` (the one shown) changed in place. */
  coloursChanged(table: Uint8ClampedArray, first: number, last: number): void;
}

/** Puts the overlay shader into `overlay` (call once, before its first draw). */
export function installOverlayShader(overlay: Layer, metadata: TileMetadata): OverlayShader {
  const colours = new ColourTexture();
  const { outlines, opacity, rows } = install(overlay, metadata, colours);
  return {
    setOutlines: (visible) => outlines.set(visible ? 1 : 0),
    setOpacity: (value) => opacity.set(Math.min(1, Math.max(0, value))),
    setColours: (table) => {
      colours.setTable(table);
      rows.set(colours.rows);
    },
    coloursChanged: (table, first, last) => colours.changed(table, first, last),
  };
}

function install(overlay: Layer, metadata: TileMetadata, colours: ColourTexture
): { outlines: Uniform; opacity: Uniform; rows: Uniform } {
  const vgl = (geo as unknown as { vgl: Record<string, any> }).vgl;
  const quad = overlay.features().find((f) => f.featureType === 'quad') as unknown as QuadFeature;
  const outlines: Uniform = new vgl.uniform(vgl.GL.FLOAT, 'outlines');
  outlines.set(0);
  const opacity: Uniform = new vgl.uniform(vgl.GL.FLOAT, 'overlayOpacity');
  opacity.set(1);
  // Both index-tile axes run 0..1 over one tile: one texel is 1 / tile size.
  const texel: Uniform = new vgl.uniform(vgl.GL.FLOAT_VEC2, 'texel');
  texel.set([1 / metadata.tile_width, -1 / metadata.tile_height]);
  const sampler: Uniform = new vgl.uniform(vgl.GL.INT, 'colourTable');
  sampler.set(TABLE_UNIT);
  const rows: Uniform = new vgl.uniform(vgl.GL.FLOAT, 'colourRows');
  rows.set(colours.rows);
  // The pixelmap may have set its shader and build hook already (when the layer drew at
  // creation) or may set them later: take over in both cases. Its program is built once the
  // first tile is loaded, after this.
  const setShader = quad.setShader.bind(quad);
  quad.setShader = (kind, code) => setShader(kind, kind === 'image_fragment' ? FRAGMENT : code);
  quad.setShader('image_fragment', FRAGMENT);
  let pixelmapHook = quad._hookBuild;
  Object.defineProperty(quad, '_hookBuild', {
    configurable: true,
    get: () => (program: Parameters<NonNullable<QuadFeature['_hookBuild']>>[0]) => {
      pixelmapHook?.(program);
      program.addUniform(outlines);
      program.addUniform(opacity);
      program.addUniform(texel);
      program.addUniform(sampler);
      program.addUniform(rows);
    },
    set: (hook: QuadFeature['_hookBuild']) => {
      pixelmapHook = hook;
    },
  });
  // Before the tiles are drawn the pixelmap binds its table; ours goes to a unit of its own.
  let pixelmapRender = quad._hookRenderImageQuads;
  Object.defineProperty(quad, '_hookRenderImageQuads', {
    configurable: true,
    get: () => (renderState: { m_context: WebGLRenderingContext }, quads: unknown) => {
      pixelmapRender?.(renderState, quads);
      colours.bind(renderState.m_context, TABLE_UNIT);
    },
    set: (hook: QuadFeature['_hookRenderImageQuads']) => {
      pixelmapRender = hook;
    },
  });
  return { outlines, opacity, rows };
}
