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
  /** Saves the card's label (through the open slide's labelling when it is that slide). */
  save(card: Card, category: number, epoch: number): void;
}

export class GuidedStrip {
  readonly element = h('section', { class: 'guided-strip', 'aria-label': 'cards to label' });
  readonly queue: GuidedQueue;
  private readonly pictures = new Map<string, HTMLImageElement>();
  private empty = false;

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
    if (card) this.hooks.save(card, category, this.queue.epoch);
    void this.advance(start);
  }

  accept(): void {
    const start = perf.mark('guided-key');
    const card = this.queue.accept();
    if (card) this.hooks.save(card, card.given!, this.queue.epoch);
    void this.advance(start);
  }

  acceptAll(): void {
    const start = perf.mark('guided-key');
    for (const card of this.queue.acceptAll()) this.hooks.save(card, card.given!, this.queue.epoch);
    void this.advance(start);
  }

  move(step: number): void {
    this.queue.moveBy(step);
    this.render();
    this.followCurrent();
  }

  /** After a label (key pressed at mark `start`): the next card, or the next page once this one is done. */
  private async advance(start: string): Promise<void> {
    if (this.queue.pageDone) {
      try {
        this.empty = !(await this.queue.nextPage());
      } catch (error) {
        showError('Could not fetch the next cards', error);
      }
    }
    this.render();
    perf.measure('guided-card-dom', start);
    // The card first; the main view moves to it in the frame after, so that redrawing the slide
    // never holds the next card back.
    requestAnimationFrame(() => {
      perf.measure('guided-next', start);
      this.followCurrent();
    });
  }

  private followCurrent(): void {
    const card = this.queue.current;
    if (card) this.hooks.follow(card);
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

  render(): void {
    if (this.empty) {
      replace(this.element, h('p', { class: 'empty' },
        'Nothing left to ask: every prepared superpixel is labelled, or no slide is prepared yet.'));
      return;
    }
    const cards = this.queue.cards.map((card, index) => {
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
    });
    replace(this.element, cards);
  }
}
