// Hash routes: each page has an address, so reload and the back button work.

export type Route =
  | { page: 'login' }
  | { page: 'projects' }
  | { page: 'project'; project: number }
  | { page: 'dashboard'; project: number }
  | { page: 'label'; project: number; slide: number }
  | { page: 'guided'; project: number }
  | { page: 'review'; project: number }
  | { page: 'gallery'; token: string };

/** Pages that open without a login: a gallery link's page. */
export function isPublic(route: Route): boolean {
  return route.page === 'gallery';
}

/** `text` with its %-escapes decoded; as it is when they are malformed (a mangled link). */
function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const project = Number(parts[1]);
  if (parts[0] === 'login') return { page: 'login' };
  if (parts[0] === 'gallery' && parts[1]) return { page: 'gallery', token: decoded(parts[1]) };
  if (parts[0] === 'p' && Number.isInteger(project)) {
    if (parts[2] === 'slides' && parts[4] === 'label') return { page: 'label', project, slide: Number(parts[3]) };
    if (parts[2] === 'guided') return { page: 'guided', project };
    if (parts[2] === 'review') return { page: 'review', project };
    if (parts[2] === 'dashboard') return { page: 'dashboard', project };
    return { page: 'project', project };
  }
  return { page: 'projects' };
}

export function hrefOf(route: Route): string {
  switch (route.page) {
    case 'login':
      return '#/login';
    case 'projects':
      return '#/';
    case 'project':
      return `#/p/${route.project}`;
    case 'label':
      return `#/p/${route.project}/slides/${route.slide}/label`;
    case 'gallery':
      return `#/gallery/${encodeURIComponent(route.token)}`;
    default:
      return `#/p/${route.project}/${route.page}`;
  }
}

export function go(route: Route): void {
  location.hash = hrefOf(route);
}
