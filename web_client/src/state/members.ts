// Who is in a project and what they may do: the roles in the order of their power, and the checks
// a form can make before asking the server (which has the last word and says why it refuses).
import type { Member } from '../api/types';

export type Role = Member['role'];

/** The roles, weakest first, with what each adds (docs/server.md). */
export const ROLES: readonly { role: Role; allows: string }[] = [
  { role: 'viewer', allows: 'view and export' },
  { role: 'annotator', allows: 'also label and retrain' },
  { role: 'reviewer', allows: 'also review others\' labels' },
  { role: 'owner', allows: 'also manage settings, slides and members' },
];

export function isRole(value: string): value is Role {
  return ROLES.some((r) => r.role === value);
}

/** Owners first, then the other roles from the strongest, each by username. */
export function sortMembers(members: readonly Member[]): Member[] {
  const rank = (role: Role) => -ROLES.findIndex((r) => r.role === role);
  return [...members].sort((a, b) => rank(a.role) - rank(b.role) || a.username.localeCompare(b.username));
}

/** Why a new account cannot be made as typed, or null when it can be sent. */
export function accountProblem(username: string, password: string): string | null {
  if (!username.trim()) return 'type a username';
  if (username !== username.trim()) return 'a username cannot start or end with a space';
  if (!password) return 'type a password';
  return null;
}

/** Why `username` cannot be added as typed, or null: empty, or already a member (change the role instead). */
export function addMemberProblem(username: string, members: readonly Member[]): string | null {
  const name = username.trim();
  if (!name) return 'type the username of an existing account';
  const existing = members.find((m) => m.username === name);
  return existing ? `${name} is already ${existing.role}: change the role in the list` : null;
}
