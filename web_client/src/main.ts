// The app: one page at a time, chosen by the address (#/...); the login page until logged in.
import { ApiClient } from './api/client';
import { SlidelabelApi } from './api/slidelabel';
import type { App, Page } from './app';
import { dashboardPage } from './pages/dashboard';
import { galleryPage } from './pages/gallery';
import { loginPage } from './pages/login';
import { projectPage } from './pages/project';
import { projectsPage } from './pages/projects';
import { reviewPage } from './pages/review';
import { workspacePage } from './pages/workspace/workspace';
import { isPublic, parseRoute, type Route } from './router';
import './style.css';

function pageOf(route: Route): Page {
  switch (route.page) {
    case 'login':
      return loginPage;
    case 'projects':
      return projectsPage;
    case 'project':
      return projectPage(route.project);
    case 'dashboard':
      return dashboardPage(route.project);
    case 'label':
      return workspacePage('label', route.project, route.slide);
    case 'guided':
      return workspacePage('guided', route.project);
    case 'review':
      return reviewPage(route.project);
    case 'gallery':
      return galleryPage(route.token);
  }
}

const app: App = { api: new SlidelabelApi(new ApiClient()), user: null };
const root = document.getElementById('app')!;
let leave: (() => void) | void;

async function show(): Promise<void> {
  leave?.();
  let route = parseRoute(location.hash);
  if (!isPublic(route)) { // a gallery link opens as it is, logged in or not
    if (!app.api.http.loggedIn) route = { page: 'login' };
    else if (!app.user) app.user = await app.api.me().catch(() => null);
    if (!app.user && route.page !== 'login') {
      location.hash = '#/login';
      return;
    }
  }
  root.replaceChildren();
  leave = pageOf(route)(app, root);
}

window.addEventListener('hashchange', () => void show());
void show();
