// What every page gets: the API and the logged-in user.
import type { SlidelabelApi } from './api/slidelabel';
import type { User } from './api/types';

export interface App {
  api: SlidelabelApi;
  user: User | null;
}

/** A page draws into `root` and returns what to undo when it is left (listeners, timers). */
export type Page = (app: App, root: HTMLElement) => (() => void) | void;
