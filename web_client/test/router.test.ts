import { describe, expect, it } from 'vitest';
import { hrefOf, isPublic, parseRoute, type Route } from '../src/router';

describe('routes', () => {
  it('round-trips every page through its address', () => {
    const routes: Route[] = [
      { page: 'login' }, { page: 'projects' }, { page: 'project', project: 3 }, { page: 'dashboard', project: 3 },
      { page: 'label', project: 3, slide: 7 }, { page: 'guided', project: 3 }, { page: 'review', project: 3 },
      { page: 'gallery', token: 'Ab-_9xYz' },
    ];
    for (const route of routes) expect(parseRoute(hrefOf(route))).toEqual(route);
  });

  it('opens a gallery link without a login, whatever its token holds', () => {
    expect(parseRoute('#/gallery/Ab-_9xYz')).toEqual({ page: 'gallery', token: 'Ab-_9xYz' });
    expect(parseRoute('#/gallery/%E0%A4%A')).toEqual({ page: 'gallery', token: '%E0%A4%A' });
    expect(isPublic(parseRoute('#/gallery/t'))).toBe(true);
    expect(isPublic(parseRoute('#/p/3'))).toBe(false);
    expect(parseRoute('#/gallery')).toEqual({ page: 'projects' });
  });

  it('falls back to the project list', () => {
    expect(parseRoute('')).toEqual({ page: 'projects' });
    expect(parseRoute('#/nonsense')).toEqual({ page: 'projects' });
  });
});
