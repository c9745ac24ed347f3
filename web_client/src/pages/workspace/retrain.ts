// "Retrain": starts an epoch and shows its job's progress until the new predictions are in.
import type { SlidelabelApi } from '../../api/slidelabel';
import { watchJob } from '../../state/jobs';
import { h, replace } from '../../ui/dom';
import { progressBar } from '../../ui/layout';
import { notify, showError } from '../../ui/notices';

export function retrainControl(api: SlidelabelApi, projectId: number, onEpoch: () => Promise<void>): {
  element: HTMLElement; stop: () => void;
} {
  const status = h('div', { class: 'retrain-status' });
  let watcher: { stop: () => void } | null = null;
  const button = h('button', { type: 'button', class: 'primary', id: 'retrain', title: 'Train a new epoch on the labels so far' },
    'Retrain');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const job = await api.train(projectId);
      const watch = watchJob(() => api.job(projectId, job.id),
        (update) => replace(status, progressBar(update.progress, update.message || update.state)));
      watcher = watch;
      const finished = await watch.done;
      if (finished.state === 'done') {
        await onEpoch();
        replace(status, h('span', { class: 'ok' }, finished.message || 'new epoch ready'));
        notify(finished.message || 'New epoch ready');
      } else {
        replace(status, h('span', { class: 'error' }, `training ${finished.state}: ${finished.message}`));
      }
    } catch (error) {
      showError('Could not retrain', error);
      replace(status);
    } finally {
      button.disabled = false;
    }
  });
  return { element: h('div', { class: 'retrain' }, button, status), stop: () => watcher?.stop() };
}
