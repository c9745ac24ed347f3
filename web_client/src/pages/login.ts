import type { Page } from '../app';
import { hrefOf } from '../router';
import { h, replace } from '../ui/dom';
import { showError } from '../ui/notices';

export const loginPage: Page = (app, root) => {
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'login card-box', 'aria-label': 'log in' },
    h('h1', {}, 'slidelabel'),
    h('label', {}, 'User name', username),
    h('label', {}, 'Password', password),
    h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const response = await app.api.login(username.value, password.value);
      app.user = response.user;
      location.hash = hrefOf({ page: 'projects' });
    } catch (error) {
      showError('Could not log in', error);
    }
  });
  replace(root, h('main', { class: 'centered' }, form));
  username.focus();
};
