import { describe, expect, it } from 'vitest';
import { hrefOf, parseRoute, type Route } from '../src/router';

describe('routes', () => {
  it('round-trips every page through its address', () => {
    const routes: Route[] = [
      { page: 'login' }, { page: 'projects' }, { page: 'project', project: 3 }, { page: 'dashboard', project: 3 },
      { page: 'label', project: 3, slide: 7 }, { page: 'guided', project: 3 }, { page: 'review', project: 3 },
    ];
    for (const route of routes) expect(parseRoute(hrefOf(route))).toEqual(route);
  });

  it('falls back to the project list', () => {
    expect(parseRoute('')).toEqual({ page: 'projects' });
    expect(parseRoute('#/nonsense')).toEqual({ page: 'projects' });
  });
});
