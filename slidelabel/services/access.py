"""Who may do what in a project: roles, actions and the one check every project route makes.

A user outside a project is told it does not exist (404), so project names and ids do not leak;
a member whose role is too weak for the action gets a 403 that names the role needed. The
server's admin acts as an owner of every project.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel.errors import NotFoundError, PermissionDeniedError
from slidelabel.store.models import Membership, Project, Role, User


class Action(enum.StrEnum):
    view = "view"
    label = "label"
    train = "train"
    review = "review"
    manage = "manage"


#: The roles allowed each action.
ALLOWED: dict[Action, frozenset[Role]] = {
    Action.view: frozenset(Role),
    Action.label: frozenset({Role.annotator, Role.reviewer, Role.owner}),
    Action.train: frozenset({Role.annotator, Role.reviewer, Role.owner}),
    Action.review: frozenset({Role.reviewer, Role.owner}),
    Action.manage: frozenset({Role.owner}),
}


def roles_allowed(action: Action) -> str:
    """The roles that may do ``action``, weakest first, as a sentence says them: 'annotator,
    reviewer or owner'."""
    roles = [role.value for role in Role if role in ALLOWED[action]]
    return roles[0] if len(roles) == 1 else f"{', '.join(roles[:-1])} or {roles[-1]}"


@dataclass(frozen=True)
class ProjectAccess:
    """A project as one user may use it."""

    project: Project
    user: User
    role: Role


def role_in(session: Session, user: User, project_id: int) -> Role | None:
    """``user``'s role in the project; admins are owners everywhere; None for outsiders."""
    if user.is_admin:
        return Role.owner
    return session.scalar(
        select(Membership.role).where(Membership.project_id == project_id, Membership.user_id == user.id)
    )


def check_access(session: Session, user: User, project_id: int, action: Action) -> ProjectAccess:
    """The project if ``user`` may do ``action`` in it, else :class:`NotFoundError` (not a member
    or no such project) or :class:`PermissionDeniedError` (role too weak)."""
    project = session.get(Project, project_id)
    role = role_in(session, user, project_id) if project is not None else None
    if role is None:
        raise NotFoundError(f"no project {project_id}")
    if role not in ALLOWED[action]:
        raise PermissionDeniedError(f"to {action.value} in this project you need to be {roles_allowed(action)}; you "
                                    f"are {role.value}")
    return ProjectAccess(project, user, role)
