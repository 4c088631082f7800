"""Dependencies as Annotated aliases, so routes read plainly and tests can override them."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from app.coordination import Coordinator
from app.errors import ServiceError
from app.metrics import Metrics
from app.recommender import Recommender
from app.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender  # type: ignore[no-any-return]


def get_coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator  # type: ignore[no-any-return]


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the admin API key")


def require_admin(settings: SettingsDep, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    if not key:
        raise ServiceError(
            401, "unauthorised", "admin routes need the X-API-Key header", {"WWW-Authenticate": "APIKey"}
        )
    if not hmac.compare_digest(key.encode(), settings.admin_api_key.get_secret_value().encode()):
        raise ServiceError(403, "forbidden", "wrong API key")


AdminDep = Depends(require_admin)
