import { describe, expect, it } from 'vitest';
import { BrushStroke, CentroidIndex, strokePoints } from '../src/state/brush';

// A 10 x 10 grid of superpixels 100 px apart, centroids at (50 + 100 i, 50 + 100 j), id = 1 + i + 10 j.
const ids: number[] = [];
const centroids: number[] = []; // x, y of each in turn
for (let j = 0; j < 10; j += 1) {
  for (let i = 0; i < 10; i += 1) {
    ids.push(1 + i + 10 * j);
    centroids.push(50 + 100 * i, 50 + 100 * j);
  }
}
const index = new CentroidIndex(ids, centroids, 128);

describe('CentroidIndex', () => {
  it('answers as a search of every centroid does, near and past the edges of its grid', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const xy = Float32Array.from({ length: 2 * 500 }, () => random() * 3000);
    const scattered = new CentroidIndex(Uint32Array.from({ length: 500 }, (_, i) => i + 1), xy, 256);
    for (let q = 0; q < 50; q += 1) {
      const point = { x: random() * 3600 - 300, y: random() * 3600 - 300 };
      const radius = random() * 400;
      const expected = [];
      for (let i = 0; i < 500; i += 1) {
        if ((xy[2 * i] - point.x) ** 2 + (xy[2 * i + 1] - point.y) ** 2 <= radius * radius) expected.push(i + 1);
      }
      expect(scattered.within(point, radius).sort((a, b) => a - b)).toEqual(expected);
    }
  });

  it('finds the centroids within a radius, across grid cells', () => {
    expect(index.within({ x: 150, y: 150 }, 10).sort((a, b) => a - b)).toEqual([12]);
    expect(index.within({ x: 100, y: 100 }, 71).sort((a, b) => a - b)).toEqual([1, 2, 11, 12]);
    expect(index.within({ x: -500, y: -500 }, 10)).toEqual([]);
  });

  it('finds the nearest centroid', () => {
    expect(index.nearest({ x: 140, y: 260 }, 200)).toBe(22);
    expect(index.nearest({ x: 5000, y: 5000 }, 100)).toBe(0);
  });
});

describe('strokePoints', () => {
  it('fills a fast stroke with points at most `spacing` apart, ending at `to`', () => {
    const points = strokePoints({ x: 0, y: 0 }, { x: 100, y: 0 }, 25);
    expect(points.map((p) => p.x)).toEqual([25, 50, 75, 100]);
    expect(strokePoints({ x: 0, y: 0 }, { x: 0, y: 0 }, 25)).toEqual([{ x: 0, y: 0 }]);
  });
});

describe('BrushStroke', () => {
  it('gathers every superpixel a stroke passes over once, in one sorted batch', () => {
    const stroke = new BrushStroke(index, 60);
    expect(stroke.moveTo({ x: 50, y: 50 })).toEqual([1]);
    // A jump across the first row: the points between are filled in.
    expect(stroke.moveTo({ x: 950, y: 50 }).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(stroke.moveTo({ x: 950, y: 50 })).toEqual([]);
    expect(stroke.batch()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('paints the superpixel under the pointer even when no centroid is in reach', () => {
    const stroke = new BrushStroke(index, 1);
    expect(stroke.moveTo({ x: 10, y: 10 }, 1)).toEqual([1]);
    expect(stroke.size).toBe(1);
  });
});
