// The bar at the top of every page: where you are and where you can go.
import type { App } from '../app';
import type { Project } from '../api/types';
import { hrefOf } from '../router';
import { h } from './dom';

export function header(app: App, project?: Project, current?: string): HTMLElement {
  const link = (label: string, href: string, key: string) =>
    h('a', { href, class: current === key ? 'current' : '', 'aria-current': current === key ? 'page' : null }, label);
  return h('header', { class: 'topbar' },
    h('a', { href: hrefOf({ page: 'projects' }), class: 'brand' }, 'slidelabel'),
    project && h('nav', { 'aria-label': 'project' },
      h('span', { class: 'project-name' }, project.name),
      link('Project', hrefOf({ page: 'project', project: project.id }), 'project'),
      link('Guided', hrefOf({ page: 'guided', project: project.id }), 'guided'),
      link('Review', hrefOf({ page: 'review', project: project.id }), 'review'),
      link('Dashboard', hrefOf({ page: 'dashboard', project: project.id }), 'dashboard')),
    h('span', { class: 'spacer' }),
    app.user && h('span', { class: 'user' }, app.user.username),
    app.user && h('button', {
      type: 'button', class: 'link', onclick: () => app.api.logout().then(() => (location.hash = '#/login')),
    }, 'Log out'));
}

/** A progress bar for a job: 0..1, with the job's message. */
export function progressBar(progress: number, label: string): HTMLElement {
  return h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(progress * 100), 'aria-label': label },
  h('div', { class: 'bar', style: `width:${Math.round(progress * 100)}%` }),
  h('span', {}, label));
}
