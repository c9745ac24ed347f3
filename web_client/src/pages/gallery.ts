// A gallery link's page, opened without an account: the project's slides read-only in the viewer
// with the link's overlay (labels or the latest predictions) and its legend, a slide picker, and
// the figures of the latest epoch. A revoked or unknown link says so, and nothing else.

import type { App, Page } from '../app';
import { ApiError } from '../api/client';
import { type Gallery, GalleryApi, type GalleryEpoch, type GallerySlide } from '../api/gallery';
import { buildColourTable, categoryColours } from '../state/colours';
import {
  accuracyText, calibrationOf, changedFractionOf, estimatedAccuracyOf, learningCurve, percentText, stoppingOf,
} from '../state/epochMetrics';
import { learningCurveChart, lineChart, reliabilityDiagram } from '../ui/charts';
import { h, replace } from '../ui/dom';
import { showError } from '../ui/notices';
import { SlideViewer } from '../viewer/slideViewer';

/** The overlay's opacity when the page opens (0..1): the tissue stays readable under it. */
const OPACITY = 0.55;

function topBar(title: string): HTMLElement {
  return h('header', { class: 'topbar' }, h('span', { class: 'brand' }, 'slidelabel'),
    h('span', { class: 'project-name' }, title), h('span', { class: 'spacer' }),
    h('span', { class: 'muted' }, 'read-only gallery'));
}

/** The page of a link that opens nothing: revoked, mistyped, or never issued. */
function gonePage(root: HTMLElement): void {
  replace(root, topBar('gallery'), h('main', { class: 'page gallery-gone', id: 'gallery-gone', role: 'alert' },
    h('h1', {}, 'This link was revoked or never existed'),
    h('p', {}, 'The gallery it pointed to is not shared (any more). Ask the person who sent it for a new link.')));
}

const isGone = (error: unknown) => error instanceof ApiError && error.status === 404;

function legend(gallery: Gallery): HTMLElement {
  return h('div', { class: 'legend', id: 'gallery-legend', role: 'list', 'aria-label': 'legend' },
    gallery.categories.map((c) => h('div', { class: 'category', role: 'listitem', 'data-category': c.id },
      h('span', { class: 'swatch', style: `background:${c.color}` }), h('span', { class: 'name' }, c.name),
      c.excluded && h('span', { class: 'count' }, 'not trained'))));
}

/** The figures of the latest epoch: stopping sentence, learning curve, accuracy per epoch, calibration. */
function figures(epochs: GalleryEpoch[]): HTMLElement {
  if (epochs.length === 0) return h('p', { class: 'muted' }, 'No model trained yet: no figures.');
  const sorted = [...epochs].sort((a, b) => a.number - b.number);
  const latest = sorted[sorted.length - 1];
  const stopping = stoppingOf(latest.metrics);
  const changed = changedFractionOf(latest.metrics);
  const accuracy = estimatedAccuracyOf(latest.metrics);
  const calibration = calibrationOf(latest.metrics);
  const curve = learningCurve(sorted);
  const score = (key: string) => sorted.map((e) => (typeof e.metrics[key] === 'number' ? (e.metrics[key] as number) : null));
  return h('div', { id: 'gallery-figures' },
    // The server's stopping sentence already gives the estimated accuracy and the change.
    h('p', { class: 'figures' }, `Epoch ${latest.number}, trained on ${latest.labels} labels`,
      !stopping && accuracy && `; estimated accuracy ${accuracyText(accuracy)}`,
      !stopping && changed !== null && `; predictions changed since the previous epoch: ${percentText(changed)}`),
    stopping && h('p', { class: 'sentence' }, stopping.sentence),
    h('div', { class: 'charts' },
      curve.length > 0 && learningCurveChart('Learning curve: estimated accuracy by labels', curve),
      lineChart('Cross-validated accuracy per epoch', sorted.map((e) => e.number), [
        { name: 'balanced accuracy', colour: '#0072B2', values: score('cv_balanced_accuracy') },
        { name: 'macro F1', colour: '#D55E00', values: score('cv_macro_f1') },
      ]),
      calibration && calibration.bins.length > 0 && reliabilityDiagram(`Reliability of the certainty (epoch ${latest.number})`,
        calibration.bins, 'A calibrated model\'s bars reach the diagonal.')));
}

/** The viewer of one slide at a time, with the link's overlay. */
class GalleryStage {
  private viewer: SlideViewer | null = null;
  private opening: Promise<void> = Promise.resolve();
  opacity = OPACITY;

  constructor(private readonly api: GalleryApi, private readonly gallery: Gallery, readonly box: HTMLElement,
    private readonly gone: () => void) {}

  open(slide: GallerySlide): Promise<void> {
    this.opening = this.opening.then(async () => {
      this.viewer?.destroy();
      this.viewer = null;
      const node = h('div', { class: 'map' });
      replace(this.box, node);
      this.box.dataset.slide = String(slide.id);
      // A slide not prepared yet (409) or without predictions yet (404) is shown without overlay.
      const [metadata, values] = await Promise.all([this.api.tileMetadata(slide.id), this.api.overlay(slide.id)
        .catch((error) => (error instanceof ApiError && [404, 409].includes(error.status) ? null : Promise.reject(error)))]);
      const shown = values ?? new Uint32Array((slide.superpixels ?? 0) + 1);
      this.viewer = new SlideViewer(node, { metadata, tileUrl: this.api.tileUrl(slide.id),
        indexUrl: this.api.indexTileUrl(slide.id), superpixels: shown.length - 1 });
      const style = { source: 'labels' as const, colours: categoryColours(this.gallery.categories), opacity: 1 };
      this.viewer.setColours(buildColourTable(shown, style));
      this.viewer.setOpacity(this.opacity);
      this.viewer.setBoundaries(false);
      this.box.dataset.coloured = String(shown.reduce((n, v) => n + (v ? 1 : 0), 0));
      if (!values) {
        this.box.append(h('p', { class: 'gallery-note' }, this.gallery.overlay === 'predictions'
          ? 'No predictions of this slide yet.' : 'This slide has no superpixels yet.'));
      }
    }).catch(async (error) => {
      // A 404 here is a link revoked since the page opened when the page itself is gone too.
      if (isGone(error) && await this.api.page().then(() => false, isGone)) this.gone();
      else showError('Could not open the slide', error);
    });
    return this.opening;
  }

  setOpacity(opacity: number): void {
    this.opacity = opacity;
    this.viewer?.setOpacity(opacity);
  }

  destroy(): void {
    this.viewer?.destroy();
  }
}

function slidePicker(api: GalleryApi, slides: GallerySlide[], choose: (slide: GallerySlide) => void): HTMLElement {
  const picker = h('div', { class: 'gallery-slides', role: 'group', 'aria-label': 'slides' });
  const pick = (slide: GallerySlide, index: number) => {
    picker.querySelectorAll('button').forEach((button, k) => button.setAttribute('aria-pressed', String(k === index)));
    choose(slide);
  };
  slides.forEach((slide, index) => picker.append(h('button', { type: 'button', class: 'gallery-slide',
    'data-slide': slide.id, 'aria-pressed': String(index === 0), title: slide.name, onclick: () => pick(slide, index) },
  h('img', { src: api.thumbnailUrl(slide.id), alt: '', loading: 'lazy' }), h('span', {}, slide.name))));
  return picker;
}

export function galleryPage(token: string): Page {
  return (app: App, root: HTMLElement) => {
    const api = new GalleryApi(app.api.http, token);
    let stage: GalleryStage | null = null;
    let left = false;
    (async () => {
      const gallery = await api.page();
      if (left) return;
      const box = h('div', { class: 'viewer', id: 'viewer', tabindex: 0, 'aria-label': 'slide viewer (read-only)' });
      stage = new GalleryStage(api, gallery, box, () => gonePage(root));
      const opacity = h('input', { type: 'range', min: 0, max: 100, value: Math.round(OPACITY * 100),
        'aria-label': 'overlay opacity', oninput: () => stage?.setOpacity(Number(opacity.value) / 100) });
      const what = gallery.overlay === 'labels' ? 'Labels (reviews, else the labellers\' majority)'
        : `Predictions of the latest epoch${gallery.epochs.length ? ` (${Math.max(...gallery.epochs.map((e) => e.number))})` : ''}`;
      replace(root, topBar(gallery.project), h('main', { class: 'gallery-page' },
        h('div', { class: 'gallery' }, h('div', { class: 'stage' }, box),
          h('aside', { class: 'panel' },
            h('h2', {}, 'Slides'), gallery.slides.length ? slidePicker(api, gallery.slides, (s) => void stage?.open(s))
              : h('p', { class: 'muted' }, 'No slide is shared by this link.'),
            h('h2', {}, 'Legend'), h('p', { class: 'muted', id: 'gallery-overlay', 'data-overlay': gallery.overlay }, what),
            legend(gallery), h('label', { class: 'opacity' }, 'Opacity ', opacity))),
        h('section', { class: 'page' }, h('h2', {}, 'Figures of the latest epoch'), figures(gallery.epochs))));
      if (gallery.slides.length) await stage.open(gallery.slides[0]);
    })().catch((error) => (isGone(error) ? gonePage(root) : showError('Could not open the gallery', error)));
    return () => {
      left = true;
      stage?.destroy();
    };
  };
}
