// Guided labelling: the strip of cards the model asks about. A category key labels the current
// card and shows the next one, Enter accepts the prediction, the arrows move, Ctrl+Enter accepts
// the page; the main view follows the current card.

import type { SlidelabelApi } from '../../api/slidelabel';
import type { Category } from '../../api/types';
import { type Card, GuidedQueue } from '../../state/guidedQueue';
import { perf } from '../../perf';
import { h, replace } from '../../ui/dom';
import { showError } from '../../ui/notices';

export interface GuidedHooks {
  /** Moves the main view to the card (opening its slide if need be). */
  follow(card: Card): void;
  /** Fetches what following the card will show, before it is the current one. */
  prefetch(card: Card): void;
  /** Saves the card's label (through the open slide's labelling when it is that slide). */
  save(card: Card, category: number, epoch: number): void;
}

export class GuidedStrip {
  readonly element = h('section', { class: 'guided-strip', 'aria-label': 'cards to label' });
  readonly queue: GuidedQueue;
  private readonly pictures = new Map<string, HTMLImageElement>();
  private empty = false;
  /** The page on screen and each card's drawn state, to redraw only the cards that changed. */
  private shown: { cards: Card[]; states: string[] } | null = null;

  constructor(
    private readonly api: SlidelabelApi,
    projectId: number,
    private readonly categories: Category[],
    private readonly hooks: GuidedHooks,
  ) {
    this.queue = new GuidedQueue({
      fetch: (n) => api.queue(projectId, n),
      prefetchPicture: (url) => this.prefetch(url),
    });
  }

  async reload(): Promise<void> {
    await this.queue.reload();
    this.empty = this.queue.cards.length === 0;
    this.render();
  }

  /** Handles a key of the guided mode; true when it was one. */
  onKey(event: KeyboardEvent, category: number | null): boolean {
    if (category !== null) this.label(category);
    else if (event.key === 'ArrowRight') this.move(1);
    else if (event.key === 'ArrowLeft') this.move(-1);
    else if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) this.acceptAll();
    else if (event.key === 'Enter') this.accept();
    else return false;
    return true;
  }

  label(category: number): void {
    const start = perf.mark('guided-key');
    const card = this.queue.label(category);
    void this.advance(start, card ? [card] : []);
  }

  accept(): void {
    const start = perf.mark('guided-key');
    const card = this.queue.accept();
    void this.advance(start, card ? [card] : []);
  }

  acceptAll(): void {
    const start = perf.mark('guided-key');
    void this.advance(start, this.queue.acceptAll());
  }

  move(step: number): void {
    this.queue.moveBy(step);
    this.render();
    this.followCurrent();
  }

  /**
   * After a key labelled `labelled` (pressed at mark `start`): the next card (or the next page once
   * this one is done) is drawn first; the labels are saved (which recolours the overlay) and the
   * main view moves in the frame after, so that redrawing the slide never holds the card back.
   */
  private async advance(start: string, labelled: Card[]): Promise<void> {
    const epoch = this.queue.epoch;
    if (this.queue.pageDone) {
      try {
        this.empty = !(await this.queue.nextPage());
      } catch (error) {
        showError('Could not fetch the next cards', error);
      }
    }
    this.render();
    perf.measure('guided-card-dom', start);
    requestAnimationFrame(() => {
      // This frame draws the card; the measure ends when the frame after it begins, so once the
      // card's frame is produced. Saving (which recolours the overlay and redraws the legend) and
      // moving the slide wait for a task after this frame's paint, so they never weigh on it.
      perf.measure('guided-card-raf', start); // the same key press measured at the card frame's start
      requestAnimationFrame(() => perf.measure('guided-next', start));
      setTimeout(() => {
        for (const card of labelled) this.hooks.save(card, card.given!, epoch);
        this.followCurrent();
      }, 0);
    });
  }

  private followCurrent(): void {
    const card = this.queue.current;
    if (card) this.hooks.follow(card);
    const next = this.queue.cards[this.queue.index + 1];
    if (next) this.hooks.prefetch(next);
  }

  /** Loads and decodes a card picture (`url` as the queue gives it, without the login token). */
  private async prefetch(url: string): Promise<void> {
    if (this.pictures.has(url)) return;
    const picture = new Image();
    picture.src = this.api.http.url(url.replace(/^\/api\/v1/, ''));
    picture.alt = '';
    picture.width = picture.height = 160;
    this.pictures.set(url, picture);
    await picture.decode();
  }

  private categoryName(id: number | null | undefined): Category | undefined {
    return this.categories.find((c) => c.id === id);
  }

  /**
   * Draws the strip. Within a page only the cards whose state changed are replaced (usually the
   * one just labelled and the new current one), so a key press repaints two cards, not eight.
   */
  render(): void {
    if (this.empty) {
      this.shown = null;
      replace(this.element, h('p', { class: 'empty' },
        'Nothing left to ask: every prepared superpixel is labelled, or no slide is prepared yet.'));
      return;
    }
    const { cards } = this.queue;
    if (this.shown?.cards !== cards) {
      this.shown = { cards, states: cards.map((card, index) => this.stateOf(card, index)) };
      replace(this.element, cards.map((card, index) => this.cardView(card, index)));
    } else {
      cards.forEach((card, index) => {
        const state = this.stateOf(card, index);
        if (state === this.shown!.states[index]) return;
        this.shown!.states[index] = state;
        this.element.children[index].replaceWith(this.cardView(card, index));
      });
    }
    this.element.children[this.queue.index]?.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }

  private stateOf(card: Card, index: number): string {
    return `${index === this.queue.index}:${card.given}:${this.pictures.has(card.thumbnail_url)}`;
  }

  private cardView(card: Card, index: number): HTMLElement {
    const predicted = this.categoryName(card.predicted);
    const given = card.given !== null ? this.categoryName(card.given) : undefined;
    const picture = this.pictures.get(card.thumbnail_url);
    return h('button', {
      type: 'button', class: `card${index === this.queue.index ? ' current' : ''}${given ? ' done' : ''}`,
      'aria-current': index === this.queue.index ? 'true' : null, 'data-superpixel': card.superpixel,
      onclick: () => this.move(index - this.queue.index),
    },
    picture ?? h('span', { class: 'missing' }, '…'),
    h('span', { class: 'prediction' },
      predicted ? [h('span', { class: 'swatch', style: `background:${predicted.color}` }), predicted.name]
        : 'no prediction yet',
      card.certainty !== null && card.certainty !== undefined ? h('span', { class: 'certainty' },
        ` ${Math.round(card.certainty * 100)}%`) : null),
    given && h('span', { class: 'given' }, '✓ ', given.name));
  }
}
