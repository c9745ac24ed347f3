"""Epochs (train, list, download the model), the guided queue and the viewer's prediction arrays."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from slidelabel.server.deps import DatabaseDep, ReadSession, SettingsDep, Trainer, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.epochs import EpochPublic, QueueItem, QueuePublic
from slidelabel.server.schemas.jobs import JobPublic
from slidelabel.services import epochs as service
from slidelabel.services.model_export import epoch_onnx_archive
from slidelabel.services.queue import next_superpixels

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["epochs"])

#: The card picture of a superpixel, served by the slides router.
THUMBNAIL_URL = "/api/v1/projects/{project_id}/slides/{slide_id}/superpixels/{superpixel}/thumbnail.png"
EpochQuery = Annotated[int | None, Query(ge=1, description="epoch number; the latest when left out")]


@router.post("/epochs", status_code=202)
def start_epoch(access: Trainer, database: DatabaseDep, settings: SettingsDep, request: Request) -> JobPublic:
    """Train a new epoch; with nothing changed since the latest one, its finished job is returned."""
    job = service.start_epoch(database, request.app.state.celery, settings.data_dir, access.project.id, access.user.id)
    return JobPublic.shown(job, admin=access.user.is_admin)


@router.get("/epochs")
def list_epochs(access: Viewer, session: ReadSession) -> list[EpochPublic]:
    return [EpochPublic.model_validate(epoch) for epoch in service.list_epochs(session, access.project.id)]


@router.get("/epochs/{number}")
def get_epoch(number: int, access: Viewer, session: ReadSession) -> EpochPublic:
    return EpochPublic.model_validate(service.get_epoch(session, access.project.id, number))


@router.get("/epochs/{number}/model", response_class=FileResponse)
def download_model(number: int, access: Viewer, session: ReadSession, settings: SettingsDep) -> FileResponse:
    """The trained model file (a zip: header.json and .npy arrays)."""
    path = service.model_file(session, settings.data_dir, access.project.id, number)
    return FileResponse(path, media_type="application/zip",
                        filename=f"project-{access.project.id}-epoch-{number}-model.zip")


@router.get("/epochs/{number}/model.onnx.zip", response_class=Response)
def download_onnx_model(number: int, access: Viewer, session: ReadSession, settings: SettingsDep) -> Response:
    """The epoch's model as ONNX (standardisation and calibration included) with a JSON sidecar
    naming the features, the normalisation to apply first and the categories with their colours."""
    archive = epoch_onnx_archive(session, settings.data_dir, access.project.id, number)
    name = f"project-{access.project.id}-epoch-{number}-model.onnx.zip"
    return Response(archive, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/queue")
def queue(access: Viewer, session: ReadSession, settings: SettingsDep,
          n: Annotated[int, Query(ge=1, le=100)] = 8, slide_id: int | None = None) -> QueuePublic:
    """The next superpixels to label, by the latest epoch's ranking (a cold start before any)."""
    found = next_superpixels(session, settings.data_dir, access.project, n=n, slide_id=slide_id)
    return QueuePublic(epoch=found.epoch, items=[
        QueueItem(**vars(item), thumbnail_url=THUMBNAIL_URL.format(project_id=access.project.id, slide_id=item.slide_id,
                                                                   superpixel=item.superpixel))
        for item in found.items])


def _binary(content: bytes, number: int) -> Response:
    return Response(content, media_type="application/octet-stream", headers={"X-Epoch": str(number)})


@router.get("/slides/{slide_id}/predictions.bin", response_class=Response)
def predictions_bin(slide_id: int, access: Viewer, session: ReadSession, settings: SettingsDep,
                    epoch: EpochQuery = None) -> Response:
    """Little-endian uint32 predicted category id per superpixel (index = superpixel id, 0 = none)."""
    number, predictions = service.slide_predictions(session, settings.data_dir, access.project.id, slide_id, epoch)
    return _binary(service.predicted_bytes(predictions), number)


@router.get("/slides/{slide_id}/certainty.bin", response_class=Response)
def certainty_bin(slide_id: int, access: Viewer, session: ReadSession, settings: SettingsDep,
                  epoch: EpochQuery = None) -> Response:
    """uint8 round(255 x certainty) per superpixel (index = superpixel id)."""
    number, predictions = service.slide_predictions(session, settings.data_dir, access.project.id, slide_id, epoch)
    return _binary(service.certainty_bytes(predictions), number)
