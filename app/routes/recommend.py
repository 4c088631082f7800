"""POST /recommend: a photo in, one distinct catalogue item per part out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.batching import Overloaded
from app.deps import RecommenderDep, SettingsDep
from app.errors import ServiceError, error_responses
from app.multipart import read_image_form
from app.recommender import NotReady, RecommendOptions
from app.schemas import IMAGE_TYPES, RecommendResponse
from model.imaging import ImageDecodeError

router = APIRouter(tags=["recommend"])


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    responses=error_responses(413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {"image": {"type": "string", "format": "binary", "description": "the photo"}},
                    },
                    "encoding": {"image": {"contentType": IMAGE_TYPES}},
                }
            },
        }
    },
)
async def recommend(
    request: Request,
    recommender: RecommenderDep,
    settings: SettingsDep,
    max_parts: Annotated[int | None, Query(ge=1, le=20, description="parts (or global items) at most")] = None,
    candidates: Annotated[int | None, Query(ge=1, le=1000, description="neighbours searched per part")] = None,
    labels: Annotated[list[str] | None, Query(description="only parts answered from these indexes")] = None,
    exclude: Annotated[list[str] | None, Query(description="item ids never to return")] = None,
    mode: Annotated[Literal["parts", "global"], Query(description="global: whole-image baseline")] = "parts",
) -> Response:
    """Find the items in the photo; return one catalogue item per part, all different."""
    data = (await read_image_form(request, settings.max_upload_bytes)).data
    options = RecommendOptions(
        max_parts=max_parts or settings.default_max_parts,
        candidates=candidates or settings.default_candidates,
        labels=frozenset(labels) if labels else None,
        exclude_ids=frozenset(exclude or ()),
        mode=mode,
    )
    try:
        result = await recommender.recommend(data, options)
    except ImageDecodeError as exc:
        raise ServiceError(422, "undecodable_image", str(exc)) from exc
    except Overloaded as exc:
        raise ServiceError(503, "overloaded", str(exc), {"Retry-After": "1"}) from exc
    except NotReady as exc:
        raise ServiceError(503, "not_ready", str(exc), {"Retry-After": "5"}) from exc
    # serialised here, once: returning the model would have FastAPI validate it again
    return Response(result.model_dump_json(), media_type="application/json")
