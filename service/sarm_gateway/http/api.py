"""The HTTP API: model info, and a whole video scored into its per-frame stage/progress curve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from google.protobuf.json_format import MessageToDict

from sarm_gateway.auth import Operation
from sarm_gateway.convert import model_info
from sarm_gateway.errors import InvalidInput
from sarm_gateway.http.deps import DepsDep, EngineDep, authorized
from sarm_gateway.http.render import render
from sarm_gateway.http.schemas import MEDIA_TYPES, ModelInfo, OutputFormat, ScoreForm, VideoScores, problems
from sarm_gateway.http.scoring import score_video, video_limits
from sarm_gateway.http.upload import receive_upload

router = APIRouter(prefix="/v1", tags=["scoring"])


AUTH = problems(401, 403)


@router.get("/model", operation_id="getModelInfo", dependencies=[authorized(Operation.INFO)], responses=AUTH)
async def get_model_info(engine: EngineDep) -> ModelInfo:
    """The model being served: stages, tasks, window, image size, encoders (as gRPC GetModelInfo)."""
    info = MessageToDict(
        model_info(engine), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return ModelInfo.model_validate(info)


@router.post(
    "/videos:score",
    operation_id="scoreVideo",
    dependencies=[authorized(Operation.VIDEO)],
    response_model=VideoScores,
    responses={
        200: {
            "content": {MEDIA_TYPES["png"]: {}, MEDIA_TYPES["parquet"]: {}},
            "description": "JSON (default), a PNG plot, or sarm_progress.parquet",
        },
        **AUTH,
        **problems(400, 408, 413, 415, 422, 429, 503, 504),
    },
    openapi_extra={"requestBody": ScoreForm.request_body()},
)
async def score_video_upload(
    request: Request,
    deps: DepsDep,
    format: Annotated[OutputFormat | None, Query(description="json (default), png or parquet")] = None,
) -> Response:
    """Upload a video (multipart field `video`) with its `instruction`; get every scored frame's stage, τ and
    progress. Frames are resized to the model's image size; the window stride comes from the video's fps."""
    engine, settings = deps.engine, deps.settings
    with deps.work.slot():  # before reading the body: a refused upload costs the client nothing to send
        async with receive_upload(
            request,
            ScoreForm.model_fields.keys(),
            settings.max_upload_bytes,
            settings.upload_timeout_s,
            settings.upload_dir,
        ) as upload:
            form = ScoreForm.parse(upload.fields)
            if format is not None and form.format is not None and format != form.format:
                raise InvalidInput(f"format is '{format}' in the query but '{form.format}' in the form: give one")
            output = format or form.format or "json"
            curve = await score_video(engine, upload.video, form, video_limits(settings))
        body, headers = await engine.offload(render, curve, output, engine)
    return Response(body, media_type=MEDIA_TYPES[output], headers=headers)
