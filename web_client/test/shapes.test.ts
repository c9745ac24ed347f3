import { describe, expect, it } from 'vitest';
import { CentroidIndex } from '../src/state/brush';
import {
  GrowProposal, LassoPath, PolygonDraft, SuggestionScales, centroidsInside, insidePolygon, regionServes, vertexPairs,
} from '../src/state/shapes';

describe('PolygonDraft', () => {
  it('closes with three or more vertices, ignoring a double-click repeat of the last one', () => {
    const draft = new PolygonDraft();
    draft.add({ x: 0, y: 0 });
    draft.add({ x: 10, y: 0 });
    expect(draft.closable).toBe(false);
    draft.add({ x: 10, y: 10 }, 2);
    draft.add({ x: 11, y: 10 }, 2); // the second click of a double-click
    expect(draft.points).toHaveLength(3);
    expect(draft.close()).toEqual([{ x: 0, y: 0 }, { x: 10, y: 0 }, { x: 10, y: 10 }]);
    expect(draft.points).toHaveLength(0);
  });

  it('gives nothing to close below three vertices, and Backspace drops the last', () => {
    const draft = new PolygonDraft();
    draft.add({ x: 0, y: 0 });
    draft.add({ x: 5, y: 5 });
    draft.add({ x: 9, y: 1 });
    draft.removeLast();
    expect(draft.close()).toBeNull();
    expect(draft.points).toHaveLength(2);
  });
});

describe('LassoPath', () => {
  it('keeps points at least the spacing apart', () => {
    const lasso = new LassoPath(5);
    for (let x = 0; x <= 20; x += 1) lasso.moveTo({ x, y: 0 });
    expect(lasso.points.map((p) => p.x)).toEqual([0, 5, 10, 15, 20]);
    expect(new LassoPath(5).close()).toBeNull();
  });
});

describe('GrowProposal', () => {
  it('limits the region to a reach in neighbour steps', () => {
    const proposal = new GrowProposal(7, [7, 3, 9, 12], [0, 1, 1, 2]);
    expect(proposal.maxSteps).toBe(2);
    expect(proposal.within(1)).toEqual([7, 3, 9]);
    expect(proposal.within(0)).toEqual([7]);
  });
});

describe('vertexPairs', () => {
  it('rounds to hundredths of a level-0 pixel', () => {
    expect(vertexPairs([{ x: 1.23456, y: 2 }])).toEqual([[1.23, 2]]);
  });
});

describe('centroidsInside', () => {
  it('previews the superpixels whose centroid the polygon encloses', () => {
    const index = new CentroidIndex([1, 2, 3, 4], [5, 5, 12, 5, 5, 12, 30, 30], 8);
    const triangle = [{ x: 0, y: 0 }, { x: 20, y: 0 }, { x: 0, y: 20 }];
    expect(centroidsInside(index, triangle).sort()).toEqual([1, 2, 3]);
    expect(insidePolygon({ x: 11, y: 11 }, triangle)).toBe(false);
  });
});

describe('smart tool state', () => {
  it('keeps an embedded region while it holds the view at about its resolution', () => {
    const embedded = [0, 0, 1000, 800] as const;
    expect(regionServes(embedded, [100, 100, 900, 700])).toBe(true);
    expect(regionServes(embedded, [500, 100, 1300, 700])).toBe(false); // panned out of it
    expect(regionServes(embedded, [400, 300, 500, 380])).toBe(false); // zoomed far in: too coarse
    expect(regionServes(null, [0, 0, 10, 10])).toBe(false);
  });

  it('cycles three scales both ways, wrapping round', () => {
    const scales = new SuggestionScales(['small', 'middle', 'large'], 1);
    expect(scales.current).toBe('middle');
    scales.cycle(1);
    scales.cycle(1);
    expect([scales.scale, scales.current]).toEqual([0, 'small']);
    scales.cycle(-1);
    expect(scales.current).toBe('large');
    const none = new SuggestionScales<string>([], 2);
    none.cycle(1);
    expect([none.scale, none.current]).toEqual([0, undefined]);
  });
});
