// Messages to the person: the server's refusals in its own words, and short confirmations.
import { ApiError } from '../api/client';

let area: HTMLElement | null = null;

function container(): HTMLElement {
  if (!area) {
    area = document.createElement('div');
    area.className = 'notices';
    area.setAttribute('role', 'status');
    area.setAttribute('aria-live', 'polite');
    document.body.appendChild(area);
  }
  return area;
}

export function notify(message: string, kind: 'error' | 'info' = 'info', seconds = kind === 'error' ? 8 : 3): void {
  const note = document.createElement('div');
  note.className = `notice ${kind}`;
  note.textContent = message;
  note.addEventListener('click', () => note.remove());
  container().appendChild(note);
  setTimeout(() => note.remove(), seconds * 1000);
}

/** Shows why an action failed: the server's `detail`, prefixed with what was attempted. */
export function showError(what: string, error: unknown): void {
  const reason = error instanceof ApiError ? error.message : error instanceof Error ? error.message : String(error);
  const status = error instanceof ApiError && error.status === 403 ? ' (your role in this project does not allow it)' : '';
  notify(`${what}: ${reason}${status}`, 'error');
}

/** Runs `action`, showing its failure; resolves to undefined when it failed. */
export async function attempt<T>(what: string, action: () => Promise<T>): Promise<T | undefined> {
  try {
    return await action();
  } catch (error) {
    showError(what, error);
    return undefined;
  }
}
