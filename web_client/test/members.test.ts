import { describe, expect, it } from 'vitest';
import type { Member } from '../src/api/types';
import { accountProblem, addMemberProblem, isRole, ROLES, sortMembers } from '../src/state/members';

const member = (user_id: number, username: string, role: Member['role']): Member => ({ user_id, username, role });

describe('roles', () => {
  it('are the server\'s four, weakest first', () => {
    expect(ROLES.map((r) => r.role)).toEqual(['viewer', 'annotator', 'reviewer', 'owner']);
    expect(isRole('reviewer')).toBe(true);
    expect(isRole('admin')).toBe(false);
  });
});

describe('the member list', () => {
  it('shows owners first, then by role strength, each by username', () => {
    const sorted = sortMembers([member(1, 'zoe', 'viewer'), member(2, 'bob', 'owner'), member(3, 'ann', 'annotator'),
      member(4, 'amy', 'owner'), member(5, 'cat', 'reviewer'), member(6, 'abe', 'viewer')]);
    expect(sorted.map((m) => m.username)).toEqual(['amy', 'bob', 'cat', 'ann', 'abe', 'zoe']);
  });

  it('leaves its input alone', () => {
    const members = [member(1, 'b', 'viewer'), member(2, 'a', 'owner')];
    sortMembers(members);
    expect(members[0].username).toBe('b');
  });
});

describe('adding a member', () => {
  const members = [member(1, 'admin', 'owner'), member(2, 'pat', 'annotator')];
  it('needs a username', () => {
    expect(addMemberProblem('  ', members)).toMatch(/type the username/);
  });
  it('sends a new username, trimmed', () => {
    expect(addMemberProblem(' lee ', members)).toBeNull();
  });
  it('points to the role list for someone already in', () => {
    expect(addMemberProblem('pat', members)).toBe('pat is already annotator: change the role in the list');
  });
});

describe('a new account', () => {
  it('needs a username without surrounding spaces and a password', () => {
    expect(accountProblem('', 'secret')).toMatch(/username/);
    expect(accountProblem(' lee', 'secret')).toMatch(/space/);
    expect(accountProblem('lee', '')).toMatch(/password/);
    expect(accountProblem('lee', 'secret')).toBeNull();
  });
});
