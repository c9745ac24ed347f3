// A project's jobs: state and progress, Cancel while queued or running, Retry once failed or
// cancelled, and each job's log behind a disclosure that stays open while the list follows the job.

import type { App } from '../../app';
import type { Job, JobLog, Project, Slide } from '../../api/types';
import { isFinished, jobAction, supersededBy } from '../../state/jobs';
import { h } from '../../ui/dom';
import { progressBar } from '../../ui/layout';
import { attempt, notify } from '../../ui/notices';

/** What the job list remembers across redraws: which logs are open, their last text, whether all jobs show. */
export interface JobsView {
  openLogs: Set<number>;
  logs: Map<number, string>;
  showAll: boolean;
}

export const newJobsView = (): JobsView => ({ openLogs: new Set(), logs: new Map(), showAll: false });

const RECENT = 10;

/** The Cancel or Retry button of `job` (none when done, or for a viewer); `after` runs once the server answered. */
export function jobButton(app: App, project: Project, job: Pick<Job, 'id' | 'kind' | 'state'>, after: () => void,
  focusKey: string): HTMLElement | null {
  const action = jobAction(job);
  if (!action || project.role === 'viewer') return null;
  const verb = action === 'cancel' ? 'Cancel' : 'Retry';
  return h('button', {
    type: 'button', class: `job-${action}`, 'data-job': job.id, 'data-focus': `${focusKey}-${action}-${job.id}`,
    'aria-label': `${verb} job ${job.id} (${job.kind})`,
    onclick: async (event: Event) => {
      (event.currentTarget as HTMLButtonElement).disabled = true;
      const answer = await attempt(`Could not ${action} job #${job.id}`, () => action === 'cancel'
        ? app.api.cancelJob(project.id, job.id) : app.api.retryJob(project.id, job.id));
      if (answer) notify(action === 'cancel' ? `Job #${job.id} cancelled` : `Job #${job.id} runs again as job #${answer.id}`);
      after();
    },
  }, verb);
}

/** A job's state: a progress bar while it waits or runs, else the state and its message. */
export function jobState(job: Pick<Job, 'state' | 'progress' | 'message'>): HTMLElement {
  if (!isFinished(job)) return progressBar(job.progress, job.message || job.state);
  return h('span', { class: `state ${job.state}`, title: job.message }, job.state);
}

function logText(job: JobLog): string {
  const params = Object.keys(job.params ?? {}).length ? `parameters: ${JSON.stringify(job.params)}\n` : '';
  return `${job.message ? `message: ${job.message}\n` : ''}${params}attempts: ${job.attempts}\n\n` +
    (job.log.trim() || '(no log lines)');
}

function logDisclosure(app: App, projectId: number, job: Job, view: JobsView): HTMLElement {
  const text = h('pre', { class: 'job-log', tabindex: 0, 'aria-label': `log text of job ${job.id}` },
    view.logs.get(job.id) ?? 'loading…');
  const load = async () => {
    const full = await attempt(`Could not read the log of job #${job.id}`, () => app.api.job(projectId, job.id));
    if (full) view.logs.set(job.id, logText(full));
    text.textContent = view.logs.get(job.id) ?? 'no log';
  };
  const details = h('details', { class: 'job-details', 'data-job': job.id, open: view.openLogs.has(job.id) },
    h('summary', { 'data-focus': `log-${job.id}`, 'aria-label': `log of job ${job.id}` }, 'Log'), text);
  details.addEventListener('toggle', () => {
    if (details.open) {
      view.openLogs.add(job.id);
      void load();
    } else view.openLogs.delete(job.id);
  });
  // Open across a redraw: read it again, the job may have written more.
  if (details.open) void load();
  return details;
}

/** "run again as #n" for a failed or cancelled job that a later one took over from (no Retry then). */
function againAs(job: Job, jobs: Job[]): HTMLElement | null {
  const later = jobAction(job) === 'retry' ? supersededBy(job, jobs) : undefined;
  // It takes the Retry button's focus key, so that a keyboard user who pressed Retry lands on it.
  return later ? h('span', { class: 'superseded muted', tabindex: -1, 'data-focus': `jobs-retry-${job.id}` },
    `run again as #${later.id}`) : null;
}

/** The project's jobs, newest first: the ten latest, or all the server lists. */
export function jobsTable(app: App, project: Project, jobs: Job[], slides: Slide[], view: JobsView,
  refresh: () => void): HTMLElement {
  if (jobs.length === 0) return h('p', {}, 'No job yet: Prepare slides starts one per slide.');
  const slideName = new Map(slides.map((s) => [s.id, s.name]));
  const sorted = [...jobs].sort((a, b) => b.id - a.id);
  const shown = view.showAll ? sorted : sorted.slice(0, RECENT);
  return h('div', {},
    h('table', { class: 'jobs' },
      h('thead', {}, h('tr', {}, ['Job', 'Slide', 'State', 'Message', 'Tries', 'Updated', '', 'Log']
        .map((t) => h('th', {}, t)))),
      h('tbody', {}, shown.map((job) => h('tr', { 'data-job': job.id, 'data-state': job.state },
        h('td', {}, `#${job.id} ${job.kind}`),
        h('td', {}, job.slide_id ? slideName.get(job.slide_id) ?? `slide ${job.slide_id}` : '—'),
        h('td', {}, jobState(job)),
        h('td', { class: 'message' }, isFinished(job) && job.message !== job.state ? job.message : ''),
        h('td', {}, job.attempts),
        h('td', {}, new Date(job.updated_at).toLocaleTimeString()),
        h('td', {}, againAs(job, sorted) ?? jobButton(app, project, job, refresh, 'jobs')),
        h('td', {}, logDisclosure(app, project.id, job, view)))))),
    sorted.length > RECENT && h('button', { type: 'button', class: 'link', 'data-focus': 'jobs-all',
      'aria-expanded': view.showAll, onclick: () => {
        view.showAll = !view.showAll;
        refresh();
      } }, view.showAll ? `Show the ${RECENT} latest` : `Show all ${sorted.length} jobs`));
}
