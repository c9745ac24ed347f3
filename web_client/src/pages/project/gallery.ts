// An owner's "Share a read-only link" panel: publish a gallery link (labels or predictions, every
// slide or chosen ones), copy it while its token is shown (once: the server keeps only its hash),
// list the project's links and revoke them.

import type { App } from '../../app';
import type { Project, Slide } from '../../api/types';
import { galleryAddress, type GalleryLink, GalleryLinks, type GalleryOverlay } from '../../api/gallery';
import { h, replaceKeepingFocus } from '../../ui/dom';
import { attempt, notify, showError } from '../../ui/notices';

async function copy(text: string, input: HTMLInputElement): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    notify('Link copied');
  } catch {
    input.select(); // no clipboard (plain http): the link is selected for Ctrl+C
    notify('Press Ctrl+C to copy the selected link');
  }
}

/** The link just made, with its address: the only time the token can be shown. */
function newLink(token: string): HTMLElement {
  const address = galleryAddress(token);
  const input = h('input', { readonly: true, value: address, class: 'gallery-address', id: 'gallery-address',
    'aria-label': 'the new read-only link', size: 60 });
  return h('div', { class: 'row gallery-new', role: 'status' }, input,
    h('button', { type: 'button', id: 'gallery-copy', onclick: () => void copy(address, input) }, 'Copy link'),
    h('span', { class: 'muted' }, 'Shown once: copy it now. Lost links can only be revoked and made again.'));
}

function linkRow(link: GalleryLink, slides: Slide[], links: GalleryLinks, redraw: () => void): HTMLElement {
  const names = new Map(slides.map((s) => [s.id, s.name]));
  const shown = link.slide_ids.length ? link.slide_ids.map((id) => names.get(id) ?? `#${id} (deleted)`).join(', ')
    : 'all slides';
  const revoke = !link.revoked_at && h('button', { type: 'button', class: 'link gallery-revoke', 'data-link': link.id,
    'data-focus': `revoke-${link.id}`, onclick: async () => {
      if (!confirm('Revoke this link? Whoever has it will see that it was revoked; this cannot be undone.')) return;
      if (await attempt('Could not revoke the link', () => links.revoke(link.id))) notify('Link revoked');
      redraw();
    } }, 'Revoke');
  return h('tr', { 'data-link': link.id, 'data-state': link.revoked_at ? 'revoked' : 'active' },
    h('td', {}, new Date(link.created_at).toLocaleString()), h('td', {}, link.overlay), h('td', {}, shown),
    h('td', {}, link.revoked_at ? `revoked ${new Date(link.revoked_at).toLocaleString()}` : 'active'),
    h('td', {}, revoke));
}

function publishForm(slides: Slide[], publish: (overlay: GalleryOverlay, slideIds: number[]) => void): HTMLElement {
  const overlay = h('select', { name: 'gallery-overlay', 'data-focus': 'gallery-overlay' },
    h('option', { value: 'labels' }, 'labels'), h('option', { value: 'predictions' }, 'predictions of the latest epoch'));
  const all = h('input', { type: 'checkbox', name: 'gallery-all', checked: true, 'data-focus': 'gallery-all' });
  const boxes = slides.map((slide) => h('input', { type: 'checkbox', name: 'gallery-slide', value: slide.id,
    'data-focus': `gallery-slide-${slide.id}`, disabled: true }));
  all.addEventListener('change', () => boxes.forEach((box) => (box.disabled = all.checked)));
  const form = h('form', { class: 'gallery-publish', 'aria-label': 'share a read-only link' },
    h('div', { class: 'row' }, h('label', {}, 'Overlay', overlay),
      h('label', {}, all, ' every slide (also those added later)')),
    h('div', { class: 'row gallery-choice' }, slides.map((slide, k) => h('label', {}, boxes[k], ` ${slide.name}`))),
    h('button', { type: 'submit', class: 'primary', id: 'gallery-create', 'data-focus': 'gallery-create' }, 'Create link'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = all.checked ? [] : boxes.filter((box) => box.checked).map((box) => Number(box.value));
    if (!all.checked && chosen.length === 0) return notify('Choose the slides to share, or every slide', 'error');
    publish(overlay.value as GalleryOverlay, chosen);
  });
  return form;
}

/** The panel; it draws itself again after each change, apart from the rest of the page. */
export function gallerySection(app: App, project: Project): HTMLElement {
  const links = new GalleryLinks(app.api.http, project.id);
  const body = h('div', { class: 'gallery-links' }, h('p', {}, 'loading…'));
  let created: string | null = null;
  const draw = async () => {
    const [listed, slides] = await Promise.all([links.list(), app.api.slides(project.id)]);
    const redraw = () => void draw().catch((error) => showError('Could not list the gallery links', error));
    const publish = async (overlay: GalleryOverlay, slideIds: number[]) => {
      const made = await attempt('Could not create the link', () => links.publish({ overlay, slide_ids: slideIds }));
      created = made?.token ?? null;
      redraw();
    };
    replaceKeepingFocus(body, publishForm(slides, publish), created && newLink(created),
      listed.length > 0 && h('table', { class: 'gallery-list' },
        h('thead', {}, h('tr', {}, ['Created', 'Overlay', 'Slides', 'State', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, listed.map((link) => linkRow(link, slides, links, () => {
          created = null;
          redraw();
        })))));
  };
  draw().catch((error) => showError('Could not list the gallery links', error));
  return h('section', { 'aria-labelledby': 'gallery-heading' }, h('h2', { id: 'gallery-heading' }, 'Share a read-only link'),
    h('p', { class: 'muted' }, 'Anyone with the link sees the chosen slides with the overlay and its legend, and the ' +
      'figures of the latest epoch, without an account: no other project, no slide file, no names. Revoking stops it at once.'),
    body);
}
