import { describe, expect, it } from 'vitest';
import type { ApiClient } from '../src/api/client';
import { ApiClient as RealClient } from '../src/api/client';
import { GalleryApi } from '../src/api/gallery';
import { SlidelabelApi } from '../src/api/slidelabel';
import { buildColourTable, categoryColours } from '../src/state/colours';
import { LabelStore } from '../src/state/labelStore';

// Category ids are global and never reused: a long-lived server passes 65,535, and the arrays
// carried them as uint16 (a category 70,001 became 4,465, or the server refused with a 409).
const FAR = 70_001;

/** An ApiClient whose every binary answer is `values` as little-endian uint32, recording the paths. */
function serving(values: number[]): { http: ApiClient; paths: string[] } {
  const paths: string[] = [];
  const http = Object.create(RealClient.prototype) as ApiClient;
  http.bytes = async (path: string) => {
    paths.push(path);
    const view = new DataView(new ArrayBuffer(4 * values.length));
    values.forEach((value, i) => view.setUint32(4 * i, value, true));
    return view.buffer;
  };
  return { http, paths };
}

describe('binary category arrays', () => {
  it('read labels.bin, predictions.bin and overlay.bin as uint32 category ids', async () => {
    const { http, paths } = serving([0, FAR, 7, 0]);
    const api = new SlidelabelApi(http);
    expect([...await api.labelArray(1, 2)]).toEqual([0, FAR, 7, 0]);
    expect([...await api.predictionArray(1, 2)]).toEqual([0, FAR, 7, 0]);
    expect([...await new GalleryApi(http, 'tok').overlay(2)]).toEqual([0, FAR, 7, 0]);
    expect(paths).toEqual(['/projects/1/slides/2/labels.bin', '/projects/1/slides/2/predictions.bin',
      '/gallery/tok/slides/2/overlay.bin']);
  });

  it('keep and colour a category id past 65,535 through a label change', async () => {
    const store = new LabelStore(await new SlidelabelApi(serving([0, FAR, 0]).http).labelArray(1, 2));
    store.apply([2], FAR + 1);
    expect([store.get(1), store.get(2)]).toEqual([FAR, FAR + 1]);
    expect(store.counts()).toEqual(new Map([[FAR, 1], [FAR + 1, 1]]));
    const colours = categoryColours([{ id: FAR, color: '#E69F00' }, { id: FAR + 1, color: '#56b4e9' }]);
    const table = buildColourTable(store.categories, { source: 'labels', colours, opacity: 1 });
    expect([...table.slice(4)]).toEqual([230, 159, 0, 255, 86, 180, 233, 255]);
  });
});
