"""Projects, their categories and members, and what the server can compute with."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from slidelabel.errors import NotFoundError
from slidelabel.server.deps import (
    CurrentUser,
    DatabaseDep,
    Owner,
    ProjectCreator,
    ReadSession,
    SettingsDep,
    Viewer,
    WriteSession,
)
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.projects import (
    CategoryCreate,
    CategoryMerge,
    CategoryPublic,
    CategoryUpdate,
    MemberPublic,
    MemberSet,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
)
from slidelabel.server.schemas.registry import RegistryPublic
from slidelabel.services import accounts
from slidelabel.services import projects as service
from slidelabel.services.access import ProjectAccess
from slidelabel.services.registries import registries
from slidelabel.store.models import Project, Role

router = APIRouter(route_class=CommitInRouteThread, tags=["projects"])


@router.get("/registry")
def registry(_user: CurrentUser) -> RegistryPublic:
    """Feature extractors, models, certainty strategies, normalisations, slide readers and import
    formats this server has, with the defaults a new project gets."""
    return RegistryPublic.model_validate({kind: [asdict(choice) for choice in choices]
                                          for kind, choices in registries().items()})


@router.get("/projects")
def list_projects(session: ReadSession, user: CurrentUser) -> list[ProjectPublic]:
    return [ProjectPublic.of(project, role) for project, role in service.projects_of(session, user)]


@router.post("/projects", status_code=201)
def create_project(body: ProjectCreate, session: WriteSession, user: ProjectCreator) -> ProjectPublic:
    project = service.create_project(session, accounts.acting(session, user), body.name, description=body.description,
                                     choices=body.choices(), superpixels=body.superpixels.chosen(),
                                     categories=body.new_categories())
    return ProjectPublic.of(project, Role.owner)


@router.get("/projects/{project_id}")
def get_project(access: Viewer) -> ProjectPublic:
    return ProjectPublic.of(access.project, access.role)


def _mine(session, access: ProjectAccess) -> Project:
    """The access's project loaded in this (write) session; :class:`NotFoundError` when another
    request deleted it since the access check."""
    project = session.get(Project, access.project.id)
    if project is None:
        raise NotFoundError(f"project {access.project.id} was deleted while this request ran")
    return project


@router.patch("/projects/{project_id}")
def update_project(body: ProjectUpdate, access: Owner, session: WriteSession) -> ProjectPublic:
    changes = body.model_dump(exclude_none=True)
    name, description = changes.pop("name", None), changes.pop("description", None)
    project = service.update_project(session, _mine(session, access), access.user, name=name,
                                     description=description, choices=changes)
    return ProjectPublic.of(project, access.role)


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(access: Owner, database: DatabaseDep, settings: SettingsDep) -> None:
    """Remove the project, its slides, labels and files; 409 while its jobs are queued or running."""
    service.delete_project(database, settings, project_id=access.project.id)


@router.post("/projects/{project_id}/categories", status_code=201)
def add_category(body: CategoryCreate, access: Owner, session: WriteSession) -> CategoryPublic:
    category = service.add_category(session, _mine(session, access), body.name, color=body.color,
                                    hotkey=body.hotkey, excluded=body.excluded)
    return CategoryPublic.model_validate(category)


@router.patch("/projects/{project_id}/categories/{category_id}")
def update_category(category_id: int, body: CategoryUpdate, access: Owner, session: WriteSession) -> CategoryPublic:
    category = service.get_category(session, _mine(session, access), category_id)
    return CategoryPublic.model_validate(service.update_category(session, category, **body.model_dump(exclude_none=True)))


@router.post("/projects/{project_id}/categories/{category_id}/merge")
def merge_category(category_id: int, body: CategoryMerge, access: Owner, session: WriteSession) -> dict[str, int]:
    project = _mine(session, access)
    source = service.get_category(session, project, category_id)
    target = service.get_category(session, project, body.into)
    return {"moved_labels": service.merge_categories(session, source, target, access.user)}


@router.get("/projects/{project_id}/members")
def list_members(access: Viewer, session: ReadSession) -> list[MemberPublic]:
    return [MemberPublic(user_id=user.id, username=user.username, role=role)
            for user, role in service.members(session, access.project)]


@router.put("/projects/{project_id}/members")
def set_member(body: MemberSet, access: Owner, session: WriteSession) -> MemberPublic:
    membership = service.set_member(session, _mine(session, access), body.username, body.role)
    return MemberPublic(user_id=membership.user_id, username=body.username, role=membership.role)


@router.delete("/projects/{project_id}/members/{user_id}", status_code=204)
def remove_member(user_id: int, access: Owner, session: WriteSession) -> None:
    service.remove_member(session, _mine(session, access), user_id)
