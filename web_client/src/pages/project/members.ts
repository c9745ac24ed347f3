// Who works on a project: members and their roles; an owner adds an existing account, changes a
// role or removes a member; the admin also makes new accounts. The server checks every change and
// its refusal (not an owner, the last owner, no such user) is shown in its own words.

import type { App } from '../../app';
import type { Member, Project, User } from '../../api/types';
import { hrefOf } from '../../router';
import { accountProblem, addMemberProblem, isRole, ROLES, sortMembers, type Role } from '../../state/members';
import { h, replaceKeepingFocus } from '../../ui/dom';
import { attempt, notify, showError } from '../../ui/notices';

function roleSelect(chosen: Role, attributes: Record<string, string | boolean>): HTMLSelectElement {
  return h('select', attributes, ROLES.map(({ role, allows }) =>
    h('option', { value: role, selected: role === chosen, title: allows }, role)));
}

function memberRow(app: App, project: Project, member: Member, owner: boolean, redraw: () => void): HTMLElement {
  const you = member.username === app.user?.username;
  const role = roleSelect(member.role, { 'aria-label': `role of ${member.username}`, disabled: !owner,
    'data-focus': `role-${member.user_id}`, class: 'member-role' });
  // Your own role changed: what the whole page offers changes with it.
  const after = you ? () => window.dispatchEvent(new HashChangeEvent('hashchange')) : redraw;
  role.addEventListener('change', async () => {
    const wanted = role.value;
    if (!isRole(wanted)) return;
    const changed = await attempt(`Could not make ${member.username} ${wanted}`,
      () => app.api.setMember(project.id, { username: member.username, role: wanted }));
    if (changed) notify(`${member.username} is now ${changed.role}`);
    (changed ? after : redraw)();
  });
  const remove = owner && h('button', { type: 'button', class: 'link remove-member', 'data-focus': `remove-${member.user_id}`,
    'aria-label': `remove ${member.username} from the project`, onclick: async () => {
      if (!confirm(`Remove ${member.username} from ${project.name}? Their labels stay.`)) return;
      try {
        await app.api.removeMember(project.id, member.user_id);
        notify(`${member.username} removed from the project`);
        if (you) location.hash = hrefOf({ page: 'projects' }); // no longer yours to see
        else redraw();
      } catch (error) {
        showError(`Could not remove ${member.username}`, error);
        redraw();
      }
    } }, 'Remove');
  return h('tr', { 'data-member': member.username, 'data-role': member.role },
    h('td', {}, member.username, you && h('span', { class: 'muted' }, ' (you)')),
    h('td', {}, role),
    owner && h('td', {}, remove));
}

function addMemberForm(app: App, project: Project, members: Member[], users: User[], redraw: () => void): HTMLElement {
  const known = new Set(members.map((m) => m.username));
  const username = h('input', { name: 'member-username', list: 'known-users', autocomplete: 'off', 'data-focus': 'add-username' });
  const role = roleSelect('annotator', { name: 'member-role', 'data-focus': 'add-role' });
  const form = h('form', { class: 'row member-add', 'aria-label': 'add a member' },
    h('label', {}, 'Username', username),
    h('datalist', { id: 'known-users' }, users.filter((u) => !known.has(u.username))
      .map((u) => h('option', { value: u.username }))),
    h('label', {}, 'Role', role),
    h('button', { type: 'submit', 'data-focus': 'add-member' }, 'Add member'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const problem = addMemberProblem(username.value, members);
    if (problem) return notify(`Could not add ${username.value.trim() || 'the member'}: ${problem}`, 'error');
    const added = await attempt(`Could not add ${username.value.trim()}`,
      () => app.api.setMember(project.id, { username: username.value.trim(), role: role.value as Role }));
    if (added) {
      notify(`${added.username} added as ${added.role}`);
      redraw();
    }
  });
  return form;
}

/** The admin's form for a new account; `created` gets its username (to add it to the project). */
function newAccountForm(app: App, created: (username: string) => void): HTMLElement {
  const username = h('input', { name: 'new-username', autocomplete: 'off', 'data-focus': 'new-username' });
  const password = h('input', { name: 'new-password', type: 'password', autocomplete: 'new-password',
    'data-focus': 'new-password' });
  const form = h('form', { class: 'row new-account', 'aria-label': 'new account' },
    h('label', {}, 'Username', username), h('label', {}, 'Password', password),
    h('button', { type: 'submit', 'data-focus': 'create-account' }, 'Create account'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const problem = accountProblem(username.value, password.value);
    if (problem) return notify(`Could not create the account: ${problem}`, 'error');
    const user = await attempt('Could not create the account',
      () => app.api.createUser({ username: username.value, password: password.value, is_admin: false }));
    if (user) {
      notify(`Account ${user.username} created: add them to the project with a role`);
      created(user.username);
    }
  });
  return form;
}

/** The members section; it draws itself again after each change, apart from the rest of the page. */
export function membersSection(app: App, project: Project): HTMLElement {
  const owner = project.role === 'owner';
  const body = h('div', { class: 'members' }, h('p', {}, 'loading…'));
  let prefill = '';
  const draw = async () => {
    const [members, users] = await Promise.all([app.api.members(project.id),
      owner ? app.api.users().catch(() => [] as User[]) : Promise.resolve([] as User[])]);
    const redraw = () => void draw().catch((error) => showError('Could not list the members', error));
    const add = owner ? addMemberForm(app, project, members, users, redraw) : null;
    replaceKeepingFocus(body,
      h('table', { class: 'members' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Member'), h('th', {}, 'Role'), owner && h('th', {}, ''))),
        h('tbody', {}, sortMembers(members).map((m) => memberRow(app, project, m, owner, redraw)))),
      owner ? add : h('p', { class: 'muted' }, `You are ${project.role}: only an owner changes the members.`),
      owner && app.user?.is_admin && h('div', {}, h('h3', {}, 'New account (admin)'), newAccountForm(app, (name) => {
        prefill = name;
        redraw();
      })));
    if (prefill && add) {
      const input = add.querySelector<HTMLInputElement>('input[name=member-username]')!;
      input.value = prefill;
      prefill = '';
      add.querySelector<HTMLSelectElement>('select[name=member-role]')!.focus();
    }
  };
  draw().catch((error) => showError('Could not list the members', error));
  return h('section', { 'aria-labelledby': 'members-heading' }, h('h2', { id: 'members-heading' }, 'People'),
    h('p', { class: 'muted' }, ROLES.map(({ role, allows }) => `${role}: ${allows}`).join(' · ')), body);
}
