import { describe, expect, it } from 'vitest';
import type { Queue, QueueItem } from '../src/api/types';
import { GuidedQueue } from '../src/state/guidedQueue';

/** A server queue over superpixels 1..total of slide 1 that drops what was labelled. */
function fakeServer(total: number) {
  const labelled = new Set<number>();
  const calls: number[] = [];
  const pictures: string[] = [];
  const item = (superpixel: number): QueueItem => ({
    slide_id: 1, superpixel, bbox_level0: [0, 0, 1, 1], centroid_level0: [0, 0], predicted: 3, certainty: 0.5,
    score: 1, thumbnail_url: `/pic/${superpixel}`,
  });
  return {
    labelled, calls, pictures,
    source: {
      async fetch(n: number): Promise<Queue> {
        calls.push(n);
        const items: QueueItem[] = [];
        for (let s = 1; s <= total && items.length < n; s += 1) if (!labelled.has(s)) items.push(item(s));
        return { epoch: 2, items };
      },
      async prefetchPicture(url: string) {
        pictures.push(url);
      },
    },
  };
}

describe('GuidedQueue', () => {
  it('loads a page with its pictures and the epoch', async () => {
    const server = fakeServer(20);
    const queue = new GuidedQueue(server.source, 4, 2);
    await queue.reload();
    expect(queue.cards.map((c) => c.superpixel)).toEqual([1, 2, 3, 4]);
    expect(server.pictures).toEqual(['/pic/1', '/pic/2', '/pic/3', '/pic/4']);
    expect(queue.epoch).toBe(2);
    expect(queue.index).toBe(0);
  });

  it('labels and advances, moves with clamping, and accepts predictions', async () => {
    const queue = new GuidedQueue(fakeServer(20).source, 4, 0);
    await queue.reload();
    expect(queue.label(5)?.superpixel).toBe(1);
    expect(queue.index).toBe(1);
    queue.moveBy(-5);
    expect(queue.index).toBe(0);
    queue.moveBy(10);
    expect(queue.index).toBe(3);
    expect(queue.accept()?.given).toBe(3);
    expect(queue.cards.map((c) => c.given)).toEqual([5, null, null, 3]);
    expect(queue.acceptAll().map((c) => c.superpixel)).toEqual([2, 3]);
    expect(queue.pageDone).toBe(true);
  });

  it('prefetches the next page before the end and never shows a card twice', async () => {
    const server = fakeServer(20);
    const queue = new GuidedQueue(server.source, 4, 2);
    await queue.reload();
    queue.label(1);
    expect(server.calls).toHaveLength(1);
    queue.label(1); // two left: the next page is fetched now, while cards 3 and 4 wait
    expect(server.calls).toHaveLength(2);
    queue.label(1);
    queue.label(1);
    for (const card of queue.cards) server.labelled.add(card.superpixel);
    expect(await queue.nextPage()).toBe(true);
    expect(queue.cards.map((c) => c.superpixel)).toEqual([5, 6, 7, 8]);
    expect(server.calls).toHaveLength(2);
    expect(queue.index).toBe(0);
  });

  it('says when the queue is empty', async () => {
    const server = fakeServer(2);
    const queue = new GuidedQueue(server.source, 4, 0);
    await queue.reload();
    queue.acceptAll();
    expect(await queue.nextPage()).toBe(false);
  });

  it('starts over on reload (a new epoch)', async () => {
    const server = fakeServer(20);
    const queue = new GuidedQueue(server.source, 4, 4);
    await queue.reload();
    await queue.reload();
    expect(queue.cards.map((c) => c.superpixel)).toEqual([1, 2, 3, 4]);
  });
});
