// Guided labelling: a page of cards from the server's queue, a cursor, and the next page fetched
// (with its pictures decoded) before the cursor gets there, so the next card is on screen at
// once. Pure state: the page draws the cards and sends the labels.

import type { Queue, QueueItem } from '../api/types';

export interface Card extends QueueItem {
  /** The category given here (0: unlabelled), or null while the card waits. */
  given: number | null;
}

export interface QueueSource {
  /** The next `n` superpixels to label (GET /queue). */
  fetch(n: number): Promise<Queue>;
  /** Loads and decodes a card picture, so showing it costs nothing. */
  prefetchPicture(url: string): Promise<void>;
}

const keyOf = (item: { slide_id: number; superpixel: number }) => `${item.slide_id}:${item.superpixel}`;

export class GuidedQueue {
  cards: Card[] = [];
  index = 0;
  /** The epoch whose ranking the cards come from (sent with each label); 0 before any. */
  epoch = 0;
  private upcoming: Promise<Card[]> | null = null;
  /** Superpixels shown on some page: never shown twice, even while their label is in flight. */
  private readonly seen = new Set<string>();

  constructor(
    private readonly source: QueueSource,
    readonly pageSize = 8,
    /** Fetch the next page once this many cards of the page are left. */
    private readonly prefetchWhenLeft = 4,
  ) {}

  get current(): Card | undefined {
    return this.cards[this.index];
  }

  get pageDone(): boolean {
    return this.cards.length > 0 && this.cards.every((card) => card.given !== null);
  }

  /** Starts over (a new epoch's ranking): forgets the page and what was prefetched. */
  async reload(): Promise<void> {
    this.upcoming = null;
    this.seen.clear();
    this.show(await this.fetchPage());
  }

  /** Gives the current card `category` and moves on; returns the card labelled. */
  label(category: number): Card | undefined {
    const card = this.current;
    if (!card) return undefined;
    card.given = category;
    this.moveBy(1);
    return card;
  }

  /** Gives the current card its predicted category (nothing without a prediction). */
  accept(): Card | undefined {
    const predicted = this.current?.predicted;
    return predicted ? this.label(predicted) : undefined;
  }

  /** Gives every waiting card of the page its prediction; returns those labelled. */
  acceptAll(): Card[] {
    const accepted = this.cards.filter((card) => card.given === null && card.predicted);
    for (const card of accepted) card.given = card.predicted ?? null;
    this.index = this.cards.length - 1;
    this.maybePrefetch();
    return accepted;
  }

  /** Moves the cursor by `step` within the page (clamped) and prefetches as the end nears. */
  moveBy(step: number): void {
    this.index = Math.min(this.cards.length - 1, Math.max(0, this.index + step));
    this.maybePrefetch();
  }

  /**
   * The next page, once the current one is done: ready at once when prefetched. Returns false
   * when the queue has nothing more.
   */
  async nextPage(): Promise<boolean> {
    const page = await (this.upcoming ?? this.fetchPage());
    this.upcoming = null;
    if (page.length === 0) return false;
    this.show(page);
    return true;
  }

  private show(page: Card[]): void {
    this.cards = page;
    this.index = 0;
    this.maybePrefetch();
  }

  private maybePrefetch(): void {
    if (this.upcoming || this.cards.length === 0) return;
    const waiting = this.cards.filter((card) => card.given === null).length;
    if (waiting <= this.prefetchWhenLeft) this.upcoming = this.fetchPage();
  }

  /** A page of cards not shown before, with their pictures decoded. */
  private async fetchPage(): Promise<Card[]> {
    // Ask for more than a page: superpixels of this page whose labels are in flight come back too.
    const queue = await this.source.fetch(this.pageSize + this.cards.length);
    this.epoch = queue.epoch ?? 0;
    const fresh = queue.items.filter((item) => !this.seen.has(keyOf(item))).slice(0, this.pageSize);
    for (const item of fresh) this.seen.add(keyOf(item));
    await Promise.all(fresh.map((item) => this.source.prefetchPicture(item.thumbnail_url).catch(() => undefined)));
    return fresh.map((item) => ({ ...item, given: null }));
  }
}
